"""Start pytest with gevent patched first, before pytest imports anything.

``python launch.py [pytest args]`` does what ``python -m gevent.monkey
--module pytest`` does, but a child process that re-imports the parent's
main module (``multiprocessing``, anyio's ``to_process``, both load it as
``__mp_main__``) finds a plain module here, not gevent's own ``__main__``,
whose relative imports fail when loaded that way.
"""

from gevent import monkey

monkey.patch_all()

if __name__ == "__main__":
    import sys

    import pytest

    sys.exit(pytest.main())
