"""CPython's own asyncio tests, run on HubEventLoop (see conftest.py).

A package, so its conftest is ``conformance.conftest`` and never shadows the
suite's top-level ``conftest`` module.
"""
