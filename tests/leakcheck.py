"""Suite-wide check that no token value reaches a log record.

Every token a test fake mints (or a devstack test reads) is registered here; a handler on the root
logger keeps every formatted record, with its traceback; `tests/conftest.py` fails any test whose
records contain a registered value.
"""

from __future__ import annotations

import logging
import threading

from rotation import telemetry

_secrets: set[str] = set()
_lock = threading.Lock()


def register(value: str) -> None:
    """Remember a credential so it is looked for in every log record (and its signature alone too)."""
    with _lock:
        _secrets.add(value)
        parts = value.split("&")
        if len(parts) == 3 and len(parts[2]) >= 16:
            _secrets.add(parts[2])


def find_leaks(texts: list[str]) -> list[str]:
    with _lock:
        known = list(_secrets)
    return [text[:200] for text in texts if any(s in text for s in known)]


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        extra = telemetry.fields_of(record)  # what becomes customDimensions
        self.records.append(f"{text} {extra!r}" if extra else text)


CAPTURE = Capture()
