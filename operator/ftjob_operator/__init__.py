"""ftjob operator: runs FineTuneJob resources as gang-scheduled torchrun pods."""

from ftjob_api import __version__  # noqa: F401  (one version for the distribution)
