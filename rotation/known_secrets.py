"""The secret values this process holds right now, so that every boundary can cut them out.

Shape rules (`rotation.core.redact.redact`) find a credential by what it looks like; an upstream
message can still carry one in a shape no rule foresaw (an admission webhook quoting the base64 of the
patched `data`, a message truncated in the middle of a signature). So the adapters that see a token
register it here the moment they do: ARM (a generated token), Key Vault (a stored one) and Kubernetes
(a Secret's value read or written). `scrub` then removes any 12-character piece of those, in any
encoding, from text about to leave the process: telemetry records, HTTP bodies, outcome events and
CLI output (`rotation.boundary`).

Bounded: the most recent `LIMIT` values are kept (a sweep's tokens are in flight for one reconcile
each), with each piece counted so a value can be forgotten cheaply.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict

from rotation.core.redact import known_grams, scrub, scrub_known

LIMIT = 128


class KnownSecrets:
    def __init__(self, limit: int = LIMIT) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._values: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._grams: Counter[str] = Counter()  # a piece -> how many known values have it

    def remember(self, *values: str | None) -> None:
        """Registers values (None and short ones are ignored); the oldest beyond the limit are dropped."""
        for value in values:
            if not value:
                continue
            with self._lock:
                if value in self._values:
                    self._values.move_to_end(value)
                    continue
            grams = known_grams(value)  # outside the lock: a few hundred slices
            if not grams:
                continue
            with self._lock:
                if value in self._values:
                    continue
                self._values[value] = grams
                self._grams.update(grams)
                while len(self._values) > self._limit:
                    _, old = self._values.popitem(last=False)
                    self._grams.subtract(old)
                    for gram in old:
                        if self._grams[gram] <= 0:
                            del self._grams[gram]

    def scrub(self, text: str) -> str:
        """`text` without the known values (any encoding, any piece of 12+) or anything secret-shaped."""
        # A key lookup is atomic under the GIL; a value registered meanwhile is seen or not, whole.
        return scrub(text, self._grams.keys())

    def scrub_known(self, text: str) -> str:
        """Only the known values cut out (no shape rules): for output that may hold key material by
        design, such as a registry's `caData`."""
        return scrub_known(text, self._grams.keys())

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._grams.clear()


KNOWN = KnownSecrets()
remember = KNOWN.remember
