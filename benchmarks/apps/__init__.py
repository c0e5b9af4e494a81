"""The applications each peer serves, one module per peer.

Every app answers the same paths with the same bodies, so the peers differ
only in how they run the view:

* ``/hello``: a sync view returning ``Hello, World!``;
* ``/ahello``: the same as an ``async def`` view;
* ``/io``: waits 0.1 s (``await asyncio.sleep`` in async apps, gevent's
  patched ``time.sleep`` in sync ones), the shape of an I/O-bound view;
* ``/fanout``: ten concurrent GETs to the local upstream
  (:mod:`benchmarks.apps.upstream`, which answers after 50 ms).

An app serves only the paths its runtime has a natural way to serve (no
``async def`` views on the sync baseline, no sync handlers in aiohttp).
"""
