"""CPython's asyncio TestCases that take their loops from asyncio's default.

With :class:`geventflask.EventLoopPolicy` installed (see conftest.py),
``asyncio.new_event_loop()``, ``asyncio.run()`` and ``IsolatedAsyncioTestCase``
hand these tests hub loops. The TestCase classes are collected here under
``<module>__<class>`` names; importing them by name would make pytest run
them a second time wherever they are imported.
"""

from __future__ import annotations

import importlib
import sys
import unittest

import pytest

pytest.importorskip(
    "test.test_asyncio",
    reason="needs CPython's test package (Debian: libpython3.X-testsuite)",
)

#: CPython modules whose tests reach the loop through the policy. A module
#: the running interpreter does not have is reported as one skipped test.
MODULES = [
    "test_base_events",
    "test_buffered_proto",
    "test_context",
    "test_eager_task_factory",  # 3.12+
    "test_events",
    "test_free_threading",  # 3.14+: task lists under threads (GIL builds too)
    "test_futures",
    "test_futures2",
    "test_graph",  # 3.14+: call graphs of tasks
    "test_locks",
    "test_pep492",
    "test_protocols",
    "test_queues",
    "test_runners",
    "test_server_context",  # 3.15+
    "test_ssl",
    "test_sslproto",
    "test_staggered",  # 3.13+
    "test_streams",
    "test_subprocess",
    "test_taskgroups",
    "test_tasks",
    "test_threads",
    "test_timeouts",
    "test_tools",  # 3.14+: python -m asyncio ps / pstree
    "test_unix_events",
    "test_waitfor",
]

#: Classes left out, and why. CPython's own selector variants build stock
#: loops (test_asyncio_loop.py runs their mixins on the hub loop instead);
#: test_base_events' unit tests build BaseEventLoop or SelectorEventLoop
#: themselves, around mocked selectors that never yield to the gevent hub,
#: so a test waiting on a (patched, green) thread spins forever, on the
#: stock loop too. None of these would exercise the hub loop.
LEFT_OUT = {
    "EPollEventLoopTests",
    "KqueueEventLoopTests",
    "PollEventLoopTests",
    "SelectEventLoopTests",
    "SelectorStartServerTests",
    "SelectorStartTLSTests",
    "BaseEventLoopTests",
    "BaseEventLoopWithSelectorTests",
    "BaseLoopSockSendfileTests",
}


def _missing(name: str):
    def test_module_missing():
        pytest.skip(f"test.test_asyncio.{name} does not exist on Python {_VERSION}")

    test_module_missing.__name__ = f"test_{name}__missing"
    return test_module_missing


_VERSION = ".".join(map(str, sys.version_info[:3]))


def _collect() -> dict[str, object]:
    found: dict[str, object] = {}
    for name in MODULES:
        try:
            module = importlib.import_module(f"test.test_asyncio.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"test.test_asyncio.{name}":
                raise
            found[f"test_{name}__missing"] = _missing(name)
            continue
        for attr, obj in vars(module).items():
            if (
                isinstance(obj, type)
                and issubclass(obj, unittest.TestCase)
                and obj.__module__ == module.__name__
                and attr not in LEFT_OUT
            ):
                found[f"{name}__{attr}"] = obj
    return found


globals().update(_collect())
