"""One time budget for a whole operation, shared by every call made under it.

The clock is a parameter (the application passes `time.monotonic`): the core does no I/O, and a test
can drive the budget with a counter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rotation.core.errors import UpstreamError

Monotonic = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Deadline:
    end: float
    clock: Monotonic

    @classmethod
    def after(cls, seconds: float, clock: Monotonic) -> Deadline:
        return cls(clock() + seconds, clock)

    def left(self) -> float:
        return max(0.0, self.end - self.clock())

    def check(self, what: str) -> float:
        """What is left for `what`; raises UpstreamError (transient) once the budget is spent, so a
        caller never starts a step it cannot finish."""
        left = self.left()
        if left <= 0:
            raise UpstreamError(f"deadline passed before {what}")
        return left
