"""``python -m benchmarks``: the HTTP benchmark (see :mod:`benchmarks.run`)."""

import sys

from .run import main

sys.exit(main())
