"""Other libraries' own asyncio test suites on HubEventLoop, against the stock loop.

Each test here runs one library's tests (see ``harness.SUITES``) twice in
subprocesses, on HubEventLoop and on asyncio's stock loop, both under
``patch_all()``, and fails on any test that passes on the stock loop and not
on ours unless known_failures.py lists it with a reason; and on any listed
test that now passes on ours, so the list only shrinks.

Needs the network for the sdists and a virtualenv (cached outside the
repository, see ``harness.py``) and, for SQLAlchemy on asyncpg, PostgreSQL.
Skips when either is missing, unless ``GEVENTFLASK_REQUIRE_SERVICES=1``.
About three and a half minutes on two cores, the first time a minute more;
``-m "not suites"`` leaves it out.
"""

from __future__ import annotations

import os
import re

import pytest

from . import harness
from .conftest import TABLES
from .known_failures import FLAKY, NOISE, SESSION_FAILURES, known

pytestmark = pytest.mark.suites


def _compare(name: str) -> harness.Comparison:
    try:
        return harness.compare(name)
    except harness.Unavailable as exc:
        if os.environ.get("GEVENTFLASK_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{name}: {exc} (required: GEVENTFLASK_REQUIRE_SERVICES=1)")
        pytest.skip(f"{name}: {exc}")


@pytest.mark.parametrize("name", list(harness.SUITES))
def test_library_suite(name: str) -> None:
    comparison = _compare(name)
    TABLES.append(comparison.table())
    print(comparison.table())
    stock, hub = comparison.stock, comparison.hub

    # The baseline must have run, on its own loop, or nothing was compared.
    assert not stock.session_error, f"stock loop: {stock.session_error}"
    assert len(stock.counted()) > 0, f"no test ran on the stock loop; see {stock.log}"

    if name in SESSION_FAILURES:
        if hub.session_error and not hub.tests:
            pytest.xfail(SESSION_FAILURES[name])
        pytest.fail(
            f"{name} now runs on HubEventLoop: remove it from SESSION_FAILURES"
            " in tests/suites/known_failures.py and list what still fails"
            f" there.\n{comparison.table()}"
        )
    assert not hub.session_error, f"HubEventLoop: {hub.session_error}"

    # Tests that HubEventLoop was given and did not run on it: the wiring
    # (loop_factory, new_event_loop) no longer reaches them.
    not_ours = sorted(
        test_id
        for test_id, record in stock.counted().items()
        if test_id in hub.tests
        and "hub" not in hub.tests[test_id]["loops"]
        and record["outcome"] != "skipped"
    )
    assert not not_ours, f"ran on the stock loop but not on ours: {not_ours[:20]}"

    expected = known(name)
    flaky = FLAKY.get(name, set())
    noise = [re.compile(pattern) for pattern in NOISE.get(name, {})]
    failing = comparison.only_ours()
    new = {
        k: v
        for k, v in failing.items()
        if k not in expected
        and k not in flaky
        and not any(pattern.search(v) for pattern in noise)
    }
    fixed = sorted(
        test_id
        for test_id in expected
        if test_id not in flaky
        and hub.tests.get(test_id, {}).get("outcome") == "passed"
    )
    missing = sorted(test_id for test_id in expected if test_id not in hub.tests)
    problems = []
    if new:
        problems.append(
            "Pass on the stock loop, fail on HubEventLoop (fix, or list in"
            " tests/suites/known_failures.py with a reason):\n"
            + "\n".join(f"  {k}\n      {v[:300]}" for k, v in sorted(new.items()))
        )
    if fixed:
        problems.append(
            "Now pass on HubEventLoop: remove from known_failures.py:\n"
            + "\n".join(f"  {k}" for k in fixed)
        )
    if missing:
        problems.append(
            "Listed in known_failures.py but not run at all (renamed?):\n"
            + "\n".join(f"  {k}" for k in missing)
        )
    assert not problems, "\n\n".join([comparison.table(), *problems])
