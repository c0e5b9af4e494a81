"""``python -m geventflask``: patch first, then Flask's command line (see :mod:`.cli`).

Flask imports ``ssl``, so gevent must patch before :mod:`geventflask.cli` is
imported; this module imports nothing else first.
"""

from __future__ import annotations

import sys

from .patching import patch


def main() -> None:
    """Entry point of ``python -m geventflask``."""
    patch()
    from .cli import main as cli_main

    cli_main()


def run_pytest() -> None:
    """Entry point of the ``geventflask-pytest`` console script: pytest, with
    gevent patching done before pytest (or anything it loads) imports ``ssl``."""
    patch()
    import pytest

    sys.exit(pytest.main())


if __name__ == "__main__":
    main()
