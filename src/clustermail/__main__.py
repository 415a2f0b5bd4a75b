"""`python -m clustermail` is the `clustermail` command."""

import sys

from clustermail.admin.cli import main

sys.exit(main())
