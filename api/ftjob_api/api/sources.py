"""Where the model and the data come from: `spec.model` and `spec.dataset`."""

from __future__ import annotations

from pydantic import Field, model_validator

from .. import dataset_formats
from .base import ApiModel, SecretKeyRef


class ModelSource(ApiModel):
    """Where the pretrained weights come from: exactly one of `name` or `path`."""

    name: str | None = Field(
        default=None,
        min_length=1,
        description="Hugging Face Hub model id, e.g. `bert-base-uncased` or `klue/roberta-base`.",
    )
    revision: str | None = Field(
        default=None,
        min_length=1,
        description="Hub revision (branch, tag or commit) to pin; only with `name`.",
    )
    path: str | None = Field(
        default=None,
        min_length=1,
        description="Directory holding a saved model (config.json, weights, tokenizer) inside "
        "the trainer image or on a volume from `spec.volumes`; `pkg://PACKAGE/SUBDIR` names a "
        "folder inside an installed Python package.",
    )
    hf_token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding a Hugging Face token for gated or private models and "
        "datasets. Passed to the pods as the HF_TOKEN environment variable by reference; it is "
        "never copied into the job, its ConfigMap, status or events.",
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ModelSource:
        if (self.name is None) == (self.path is None):
            raise ValueError("set exactly one of `name` (a Hub model id) or `path` (a directory)")
        if self.revision is not None and self.name is None:
            raise ValueError("`revision` applies only to a Hub model given by `name`")
        return self


class DataFiles(ApiModel):
    """Local data files (json, jsonl, csv or parquet), one per split."""

    train: str = Field(min_length=1, description="Training data file.")
    validation: str | None = Field(
        default=None, min_length=1, description="Evaluation data file used during training."
    )
    test: str | None = Field(
        default=None, min_length=1, description="Test data file, evaluated once after training."
    )


DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


class DatasetSource(ApiModel):
    """The data to train on: exactly one of a Hub dataset (`name`) or local `files`."""

    name: str | None = Field(
        default=None, min_length=1, description="Hugging Face Hub dataset id, e.g. `klue`."
    )
    config: str | None = Field(
        default=None, min_length=1, description="Dataset configuration name, e.g. `ynat`."
    )
    revision: str | None = Field(
        default=None, min_length=1, description="Hub revision of the dataset; only with `name`."
    )
    files: DataFiles | None = Field(
        default=None, description="Local files instead of a Hub dataset."
    )
    text_column: str = Field(
        default="text", min_length=1, description="Column holding the input text."
    )
    text_pair_column: str | None = Field(
        default=None,
        min_length=1,
        description="Second text column for sentence-pair tasks (e.g. MRPC's `sentence2`).",
    )
    label_column: str = Field(
        default="label",
        min_length=1,
        description="Column holding the class label (sequence-classification only).",
    )
    target_column: str | None = Field(
        default=None,
        min_length=1,
        description="Column holding the target text (seq2seq only; required there).",
    )
    train_split: str = Field(
        default="train", min_length=1, description="Split used for training."
    )
    eval_split: str | None = Field(
        default=None,
        min_length=1,
        description="Split used for evaluation. Defaults to `validation` when `files.validation` "
        "is given.",
    )
    test_split: str | None = Field(
        default=None, min_length=1, description="Split evaluated once after training."
    )
    max_train_samples: int | None = Field(
        default=None, ge=1, description="Use at most this many training examples (after shuffling "
        "with `shuffleSeed`)."
    )
    max_eval_samples: int | None = Field(
        default=None, ge=1, description="Use at most this many evaluation examples."
    )
    eval_fraction: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="Carve this fraction of the training split out as the evaluation split "
        "(like `train_test_split(test_size=..., seed=shuffleSeed)`). Not with `evalSplit`.",
    )
    shuffle_seed: int = Field(
        default=42, ge=0, description="Seed for shuffling, sampling and the eval carve-out."
    )
    max_length: int = Field(
        default=512, ge=8, le=131072, description="Tokens per example; longer inputs are truncated."
    )
    max_target_length: int | None = Field(
        default=None, ge=1, le=131072, description="Tokens per target (seq2seq); defaults to "
        "`maxLength`."
    )
    format: dataset_formats.FormatName = Field(
        default=dataset_formats.DEFAULT, description=dataset_formats.description(),
    )
    prompt_column: str | None = Field(
        default=None, min_length=1, description="Column holding the prompt (format "
        "`prompt-completion`, and task `preference`: text, or a list of `{role, content}` "
        "turns); defaults to `prompt`."
    )
    chosen_column: str | None = Field(
        default=None, min_length=1, description="Task `preference`: column holding the "
        "preferred answer (text, or a list with the assistant turn); defaults to `chosen`."
    )
    rejected_column: str | None = Field(
        default=None, min_length=1, description="Task `preference`: column holding the "
        "dispreferred answer (text, or a list with the assistant turn); defaults to `rejected`."
    )
    completion_column: str | None = Field(
        default=None, min_length=1, description="Column holding the completion (format "
        "`prompt-completion`); defaults to `completion`."
    )
    messages_column: str | None = Field(
        default=None, min_length=1, description="Column holding the list of `{role, content}` "
        "turns (format `conversational`); defaults to `messages`."
    )
    completion_only_loss: bool | None = Field(
        default=None,
        description="Train on the completion only (format `prompt-completion`) or on the "
        "assistant turns only (format `conversational`): the other tokens get the label -100. "
        "On by default for those two formats; `false` trains on every token.",
    )
    packing: bool = Field(
        default=False,
        description="causal-lm: concatenate the tokenized examples and cut them into "
        "sequences of exactly `maxLength` tokens (the last may be shorter), so no compute "
        "goes to padding. Attention is not reset between examples packed together.",
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> DatasetSource:
        if (self.name is None) == (self.files is None):
            raise ValueError("set exactly one of `name` (a Hub dataset id) or `files`")
        if self.config is not None and self.name is None:
            raise ValueError("`config` applies only to a Hub dataset given by `name`")
        if self.eval_fraction is not None and self.eval_split is not None:
            raise ValueError("set either `evalSplit` or `evalFraction`, not both")
        return self

    # The columns and the completion-only default come from the format's entry.
    @property
    def resolved_prompt_column(self) -> str:
        return dataset_formats.PROMPT.resolve(self)

    @property
    def preference_columns(self) -> dict[str, str]:
        """TRL's column name (prompt, chosen, rejected) -> this dataset's column."""
        return {c.default: c.resolve(self) for c in dataset_formats.PREFERENCE_COLUMNS}

    @property
    def resolved_completion_column(self) -> str:
        return dataset_formats.COMPLETION.resolve(self)

    @property
    def resolved_messages_column(self) -> str:
        return dataset_formats.MESSAGES.resolve(self)

    @property
    def resolved_completion_only_loss(self) -> bool:
        """Masked prompt / non-assistant tokens: the default for the formats that mask."""
        return dataset_formats.completion_only_loss(self)

    @property
    def has_eval_data(self) -> bool:
        if self.eval_split is not None or self.eval_fraction is not None:
            return True
        return self.files is not None and self.files.validation is not None

    @property
    def resolved_eval_split(self) -> str | None:
        """The split name the trainer evaluates on (`eval_fraction` carves its own)."""
        if self.eval_split is not None:
            return self.eval_split
        if self.files is not None and self.files.validation is not None:
            return "validation"
        return None

    @property
    def resolved_test_split(self) -> str | None:
        if self.test_split is not None:
            return self.test_split
        if self.files is not None and self.files.test is not None:
            return "test"
        return None
