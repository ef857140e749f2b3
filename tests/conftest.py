"""Suite-wide fixtures: the log leak check applies to every test in every tier."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests import leakcheck


def pytest_configure(config: pytest.Config) -> None:
    root = logging.getLogger()
    if leakcheck.CAPTURE not in root.handlers:
        root.addHandler(leakcheck.CAPTURE)
    root.setLevel(logging.INFO)  # what the Functions host records by default
    logging.getLogger("rotation").setLevel(logging.DEBUG)


@pytest.fixture(autouse=True)
def _no_token_in_logs() -> Iterator[None]:
    start = len(leakcheck.CAPTURE.records)
    yield
    leaks = leakcheck.find_leaks(leakcheck.CAPTURE.records[start:])
    if leaks:
        pytest.fail(f"a token value reached the logs: {leaks[0]!r}", pytrace=False)
