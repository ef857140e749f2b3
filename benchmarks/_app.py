"""Where the benchmarks find the app's service facade: the one line to change when it moves."""

from __future__ import annotations

from typing import Any


def service_module() -> Any:
    """The module defining `Rotator`."""
    import rotation.app.rotator as service

    return service


def fanout_module() -> Any:
    """The module defining `MAX_FANOUT`, the fan-out limit the benchmarks vary."""
    import rotation.app.fanout as fanout

    return fanout
