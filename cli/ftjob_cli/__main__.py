"""`python -m ftjob_cli`: the `ftjob` command."""

import sys

from .cli import main

sys.exit(main())
