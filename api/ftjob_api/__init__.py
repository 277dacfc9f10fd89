"""ftjob's shared API: what the operator, the trainer and the CLI all use.

The FineTuneJob models (`api`, the one source of truth), the operator/trainer contract
(`contract`), object naming, validation with the TrainingArguments catalogue, the manifest
reader and the CRD generator. It imports neither `ftjob_operator` nor `ftjob_trainer`
(import-linter checks it: see pyproject.toml).
"""

__version__ = "0.1.0"
