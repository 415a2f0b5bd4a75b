"""Console entry point; the commands live in :mod:`clustermail.admin.cli`."""

from __future__ import annotations

import sys

from clustermail.admin.cli import main

if __name__ == "__main__":
    sys.exit(main())
