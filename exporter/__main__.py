"""`python -m exporter` runs the same entry point as the `macie-exporter` script."""

import sys

from exporter.cli import main

sys.exit(main())
