"""What every benchmark app shares: the body, the waits, the upstream."""

from __future__ import annotations

import os

HELLO = "Hello, World!"
#: Seconds the I/O-bound view waits.
IO_WAIT = 0.1
#: Upstream calls the fan-out view makes concurrently.
FANOUT = 10
#: The local upstream the fan-out view calls; set by the runner.
UPSTREAM_URL = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8099/")
#: Connections an app's upstream client may hold open; enough for c=50 x 10.
UPSTREAM_POOL = 1000
