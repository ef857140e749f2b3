"""The one scrubbing step for text that leaves the process.

Reports, records, HTTP bodies, outcome events and CLI output carry text from outside: upstream error
messages (which may echo a request body), an operator's reason, names from events and Secrets. Two
steps, each where it fits:

- Where upstream text enters a message (a Kubernetes API error, `credential.translate`, a `reason`),
  `clean` removes the known values and then anything secret-shaped (`rotation.core.redact`): the
  shape rules read free text, so they run once, on the upstream text alone.
- Where a message leaves (records, HTTP bodies, outcome events, the terminal), `clean_tree`/`shown`
  cut out every value the process holds (`rotation.known_secrets`), in any encoding and in pieces of
  12 characters: precise, so the rotator's own prose ("reads key 'value' …, not 'config.service.auth
  .key': set …") passes unchanged. `shown` also escapes non-printable characters, so that a crafted
  name cannot rewrite what the operator sees.
"""

from __future__ import annotations

import io
from typing import Any, TextIO

from rotation.core.printable import printable, printable_lines
from rotation.known_secrets import KNOWN


def clean(text: str) -> str:
    """Upstream free text: known values cut out, then anything secret-shaped."""
    return KNOWN.scrub(text)


def clean_tree(value: Any) -> Any:
    """A JSON-shaped value (dicts, lists, tuples, scalars) with the known values cut out of every
    string in it, keys too."""
    if isinstance(value, str):
        return KNOWN.scrub_known(value)
    if isinstance(value, dict):
        return {clean_tree(k) if isinstance(k, str) else k: clean_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_tree(v) for v in value]
    return value


def shown(value: object) -> str:
    """`value` for a terminal or a log line: known values cut out, non-printable characters escaped."""
    return printable(KNOWN.scrub_known(str(value)))


class Terminal(io.TextIOBase):
    """A text stream for the CLI's output, whichever code path printed it: written a line at a time
    (a value split over several writes, as json.dump does, is seen whole), with the known secrets cut
    out and non-printable characters escaped (line breaks and tabs kept). Shape rules are not applied
    here: `discover` prints a registry whose `caData` is a long base64 run by design."""

    def __init__(self, target: TextIO) -> None:
        super().__init__()
        self._target = target
        self._pending = ""

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        if lines:
            self._target.write("".join(printable_lines(KNOWN.scrub_known(line)) + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._target.write(printable_lines(KNOWN.scrub_known(self._pending)))
            self._pending = ""
        self._target.flush()

    def isatty(self) -> bool:
        return self._target.isatty()
