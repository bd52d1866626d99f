"""`python -m sensorium.cli`: the `sensorium` command."""

import sys

from sensorium.cli import main

sys.exit(main())
