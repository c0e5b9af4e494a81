"""Prints each library suite's hub-vs-stock table at the end of the run."""

from __future__ import annotations

import pytest

#: Tables added by test_libraries.py, printed in the terminal summary.
TABLES: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TABLES:
        terminalreporter.section("other libraries' suites: HubEventLoop vs stock")
        for table in TABLES:
            terminalreporter.write_line(table)
            terminalreporter.write_line("")
