"""Where the benchmarks find the app's service facade: the one line to change when it moves."""

from __future__ import annotations

from typing import Any


def service_module() -> Any:
    """The module defining `Rotator`."""
    import rotation.app.rotator as service

    return service
