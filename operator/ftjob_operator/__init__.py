"""ftjob operator: runs FineTuneJob resources as gang-scheduled torchrun pods."""

__version__ = "0.1.0"
