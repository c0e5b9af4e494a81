"""Benchmarks: geventflask against the other ways to run async Flask.

* ``python -m benchmarks`` (:mod:`benchmarks.run`): each HTTP server in turn,
  one worker pinned to CPU 0, load from ``wrk`` pinned to CPU 1.
* ``python -m benchmarks.loop`` (:mod:`benchmarks.loop`): the hub loop against
  asyncio's stock loop, each in a process of its own.

This package imports nothing at load: the loop benchmark's children must
patch with gevent before asyncio is imported. Benchmarks are never part of
the test suite.
"""
