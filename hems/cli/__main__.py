"""`python -m hems.cli`: the same as the `hems` command."""

import sys

from hems.cli import main

sys.exit(main())
