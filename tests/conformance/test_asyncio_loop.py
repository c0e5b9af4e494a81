"""CPython's event-loop test mixins, with HubEventLoop behind their hooks.

Each class below is one of CPython's mixins plus the hook it asks for
(``create_event_loop()`` or ``new_loop()``), answered with a HubEventLoop
(or, for the baseline, asyncio's own loop: see conftest.py). The CPython modules are
imported whole, never their concrete classes, so pytest does not also
collect the stock-loop versions here.
"""

from __future__ import annotations

import unittest

import pytest

pytest.importorskip(
    "test.test_asyncio",
    reason="needs CPython's test package (Debian: libpython3.X-testsuite)",
)

from test.test_asyncio import (  # noqa: E402
    test_events,
    test_sendfile,
    test_server,
    test_sock_lowlevel,
    test_sslproto,
)
from test.test_asyncio import utils as test_utils  # noqa: E402

from .conftest import new_loop as loop_under_test  # noqa: E402


class _OnLoopUnderTest:
    """Answers both of CPython's hooks with the loop under test."""

    def create_event_loop(self):
        return loop_under_test()

    def new_loop(self):
        return loop_under_test()


#: 3.14 folded the Unix-only mixin into EventLoopTestsMixin.
_EventLoopMixin = getattr(
    test_events, "UnixEventLoopTestsMixin", test_events.EventLoopTestsMixin
)


class HubEventLoopTests(
    _OnLoopUnderTest,
    _EventLoopMixin,
    test_events.SubprocessTestsMixin,
    test_utils.TestCase,
):
    cpython_module = "test_events"


class HubSockTests(
    _OnLoopUnderTest, test_sock_lowlevel.BaseSockTestsMixin, test_utils.TestCase
):
    cpython_module = "test_sock_lowlevel"


class HubSendfileTests(
    _OnLoopUnderTest, test_sendfile.SendfileTestsBase, test_utils.TestCase
):
    cpython_module = "test_sendfile"


class HubStartServerTests(
    _OnLoopUnderTest, test_server.BaseStartServer, unittest.TestCase
):
    cpython_module = "test_server"


class HubStartTLSTests(_OnLoopUnderTest, test_sslproto.BaseStartTLS, unittest.TestCase):
    cpython_module = "test_sslproto"
