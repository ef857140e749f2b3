"""The in-process lease fences like the blob lease: a generation per name advanced on every acquisition,
and a head committed only while the lease is held, with the blob lease's outcomes (Blob REST "Lease
Blob", learn.microsoft.com/rest/api/storageservices/lease-blob, Remarks, "Outcomes of use attempts on
blobs by lease state": a write using lease id (A) fails once (A) expired, even if nobody leased the blob
since, and after release; "Renew (A)" of an expired lease succeeds while nobody leased it again).
The clock is a parameter: the test pauses a holder by moving it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from rotation.adapters.lease import LocalLease, fence_metadata, parse_fence
from rotation.core.errors import InvalidInput, UpstreamError
from rotation.core.fencing import FenceHead


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def head(n: int, generation: int) -> FenceHead:
    return FenceHead(version=f"{n:032x}", fingerprint=f"fp{n}", generation=generation)


def test_generations_strictly_increase_across_holders_and_a_commit_is_what_the_next_sees() -> None:
    leases = LocalLease()
    first = leases.acquire("s/g", duration=15, wait=0)
    assert (first.generation, first.head) == (1, None)
    assert leases.heads(["s/g"]) == {}
    first.commit(head(1, 1))
    first.release()
    second = leases.acquire("s/g", duration=15, wait=0)
    assert (second.generation, second.head) == (2, head(1, 1))
    second.release()
    third = leases.acquire("s/g", duration=15, wait=0)  # nothing committed by the second: the head stays
    assert (third.generation, third.head) == (3, head(1, 1))
    other = leases.acquire("s/other", duration=15, wait=0)
    assert other.generation == 1
    other.commit(head(2, 1))
    assert leases.heads(["s/g", "s/other", "s/none"]) == {"s/g": head(1, 1), "s/other": head(2, 1)}
    assert leases.heads([]) == {}


def test_a_holder_whose_lease_ran_out_cannot_commit() -> None:
    clock = Clock()
    leases = LocalLease(clock=clock)
    paused = leases.acquire("s/g", duration=15, wait=0)
    lapsed = leases.acquire("s/h", duration=15, wait=0)
    assert paused.remaining() == 13  # less the safety margin
    clock.now += 5
    assert paused.remaining() == 8
    clock.now += 11
    assert paused.remaining() == 0 and lapsed.remaining() == 0
    with pytest.raises(UpstreamError, match="lease s/h was lost"):
        lapsed.commit(head(1, lapsed.generation))  # expired, nobody took it: still refused
    lapsed.renew()
    assert lapsed.remaining() == 13
    lapsed.commit(head(1, lapsed.generation))

    taker = leases.acquire("s/g", duration=15, wait=0)
    assert taker.generation == paused.generation + 1
    taker.commit(head(2, taker.generation))
    with pytest.raises(UpstreamError, match="lease s/g was lost"):
        paused.commit(head(1, paused.generation))
    taker.release()
    with pytest.raises(UpstreamError, match="lease s/g was lost"):
        paused.commit(head(1, paused.generation))
    with pytest.raises(UpstreamError, match="lease s/g was lost"):
        taker.commit(head(3, taker.generation))  # released: Write using (A) on an Available blob
    assert leases.heads(["s/g", "s/h"]) == {"s/g": head(2, 2), "s/h": head(1, 1)}


def test_release_takes_a_timeout_and_returns_at_once() -> None:
    leases = LocalLease()
    held = leases.acquire("s/g", duration=15, wait=0)
    started = time.monotonic()
    held.release(timeout=0)
    assert time.monotonic() - started < 0.1
    assert leases.acquire("s/g", duration=15, wait=0).generation == 2


def test_the_blob_metadata_round_trips_and_a_partial_or_odd_head_is_refused() -> None:
    """Metadata names are case-insensitive ("Naming and Referencing Containers, Blobs, and Metadata"),
    values travel as HTTP headers (ASCII)."""
    assert parse_fence(None, "l") == (0, None)
    assert parse_fence(fence_metadata(7, head(1, 6)), "l") == (7, head(1, 6))
    shouted = {k.upper(): v for k, v in fence_metadata(7, None).items()}
    assert parse_fence(shouted, "l") == (7, None)
    for bad in ({"fencinggeneration": "-1"}, {"fencinggeneration": "\u00b2"},
                {"fencinggeneration": "3", "headversion": "abc"},
                {**fence_metadata(3, head(1, 2)), "headgeneration": "two"}):
        with pytest.raises(UpstreamError, match="malformed fencing metadata"):
            parse_fence(bad, "l")
    for odd in ("", " v", "v\n", "é"):
        with pytest.raises(InvalidInput):
            fence_metadata(1, FenceHead(odd, "fp", 1))
