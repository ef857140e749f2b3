"""The sweep's timer schedule: what the host will accept, checked before it is written into the binding.

The app writes SWEEP_SCHEDULE into the timer binding when the worker indexes it. The host then parses
it (Azure/azure-webjobs-sdk-extensions Timers/Scheduling/TimerSchedule.cs `Create`): NCRONTAB with
seconds (CronSchedule.cs `TryCreate`, `IncludingSeconds = true`: six fields) or a TimeSpan; anything
else throws and the sweep function is in error, so the safety net never runs and nothing says so
where operators look. A TimeSpan schedule is refused here too: Microsoft's timer trigger docs allow it
only on an App Service plan, and this app runs on Flex Consumption.

The field rules are NCrontab's (atifaziz/NCrontab CrontabFieldImpl.cs `InternalParse`/`ParseValue`,
CrontabField.cs `Accumulate`): a comma list of `*`, `N` or `N-M`, each with an optional `/step`;
numbers in the field's range; month and day-of-week names by case-insensitive prefix; a reversed range
is swapped and a step below 1 counts as 1. Pure: no clock, no I/O.
"""

from __future__ import annotations

import re

DEFAULT_SWEEP_SCHEDULE = "0 0 * * * *"

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
# (name, lowest, highest, value names) per field, in NCRONTAB order
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("second", 0, 59, ()), ("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day", 1, 31, ()),
    ("month", 1, 12, _MONTHS), ("day of week", 0, 6, _DAYS))
_NUMBER = re.compile(r"[0-9]{1,9}")


def _value(text: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if _NUMBER.fullmatch(text):
        return int(text)
    for i, name in enumerate(names):
        if text and name.lower().startswith(text.lower()):
            return low + i
    raise ValueError(f"{text!r} is not a number" + (f" or a name ({', '.join(n[:3] for n in names)})" if names
                                                     else ""))


def _check_field(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> None:
    for item in text.split(","):
        base, slash, step = item.partition("/")
        if slash and not _NUMBER.fullmatch(step):
            raise ValueError(f"{name} field {text!r}: step {step!r} is not a number")
        if base == "*":
            continue
        first, dash, last = base.partition("-")
        if not first:
            raise ValueError(f"{name} field {text!r}: empty value")
        values = [_value(first, low, high, names)] + ([_value(last, low, high, names)] if dash else [])
        for v in values:
            if not low <= v <= high:
                raise ValueError(f"{name} field {text!r}: {v} is outside {low}-{high}")


def schedule_problem(text: str) -> str | None:
    """Why the host would refuse `text` as the sweep's schedule, or None if it accepts it."""
    fields = text.split()
    if len(fields) != len(_FIELDS):
        return (f"it has {len(fields)} field(s); NCRONTAB needs 6 fields "
                "({second} {minute} {hour} {day} {month} {day-of-week})")
    for field, (name, low, high, names) in zip(fields, _FIELDS, strict=True):
        try:
            _check_field(field, name, low, high, names)
        except ValueError as exc:
            return str(exc)
    return None


def sweep_schedule(setting: str | None) -> tuple[str, str | None]:
    """(the schedule to bind, why the setting was not used): a missing or blank setting is the
    default; an invalid one is replaced by the default and the reason is kept for /api/health."""
    text = (setting or "").strip()
    if not text:
        return DEFAULT_SWEEP_SCHEDULE, None
    problem = schedule_problem(text)
    if problem is None:
        return text, None
    return DEFAULT_SWEEP_SCHEDULE, (f"SWEEP_SCHEDULE {text[:80]!r} is not an NCRONTAB schedule the host accepts "
                                    f"({problem}); the sweep runs on the default {DEFAULT_SWEEP_SCHEDULE!r}")
