"""Helpers the ecosystem tests import: concurrent clients that count failures
instead of raising, and readers of what the live app's workers leave behind.
"""

import concurrent.futures
import functools
from pathlib import Path

from upstream import get

#: Programs the tests run in subprocesses: the live app, scripts.
APPS = Path(__file__).resolve().parent / "apps"


# A failing server must fail the test within this, not hang it.
CLIENT_TIMEOUT = 30


def fetch(url, **kwargs):
    """GET *url* (upstream's ``get``, with a short timeout); any status is
    returned, and a client-side failure (timeout, reset) is returned as the
    exception rather than raised, so a test can count it."""
    kwargs.setdefault("timeout", CLIENT_TIMEOUT)
    try:
        return get(url, **kwargs)
    except Exception as exc:
        return exc


def fetch_all(urls, concurrency=None, **kwargs):
    """GET every URL, *concurrency* at a time (all at once by default)."""
    urls = list(urls)
    with concurrent.futures.ThreadPoolExecutor(concurrency or len(urls)) as pool:
        return list(pool.map(functools.partial(fetch, **kwargs), urls))


def ok(response) -> bool:
    return not isinstance(response, Exception) and 200 <= response.status_code < 300


def describe_failures(responses, server=None, limit=3) -> str:
    """A short account of the responses that were not 2xx, for messages;
    with *server*, also the exceptions its log recorded."""
    bad = [r for r in responses if not ok(r)]
    shown = []
    for r in bad[:limit]:
        if isinstance(r, Exception):
            shown.append(f"{type(r).__name__}: {r}")
        else:
            body = r.text if "<html" not in r.text[:100] else "(Flask's error page)"
            shown.append(f"{r.status_code}: {body[:300]}")
    account = f"{len(bad)} of {len(responses)} failed; e.g. {shown}"
    if server is not None:
        account += f"; server log: {logged_exceptions(server)}"
    return account


def logged_exceptions(server, limit=5) -> dict[str, int]:
    """How often each exception line (``Name: message``, the last line of a
    traceback) occurs in *server*'s log; the *limit* most frequent."""
    counts: dict[str, int] = {}
    in_traceback = False
    for line in server.log().splitlines():
        if line.startswith("Traceback"):
            in_traceback = True
        elif in_traceback and line and not line.startswith((" ", "\t")):
            if line.startswith(("During handling", "The above exception")):
                continue
            counts[line[:200]] = counts.get(line[:200], 0) + 1
            in_traceback = False
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    return dict(ranked[:limit])


def worker_pids(server) -> dict[str, list[str]]:
    """The pids each serving event (``before``, ``after``) was logged for."""
    path = server.markers / "serving.log"
    events: dict[str, list[str]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            event, pid = line.split()[:2]
            events.setdefault(event, []).append(pid)
    return events


def error_records(server) -> list[str]:
    """gunicorn error-log lines at ERROR or CRITICAL, and tracebacks."""
    return [
        line
        for line in server.log().splitlines()
        if "[ERROR]" in line or "[CRITICAL]" in line or line.startswith("Traceback")
    ]
