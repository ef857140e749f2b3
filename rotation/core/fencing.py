"""Which Key Vault version of a gateway's token is authoritative, when Key Vault itself cannot say.

Key Vault's Set Secret takes no precondition (no If-Match, no version to compare): a PUT that a
writer sent while it held the gateway's lease can be applied after it lost the lease, e.g. a paused
instance whose request was held by the network, and it then becomes the latest version. So the
lease decides instead. Each acquisition advances a fencing *generation* kept in the lease blob's
metadata, written with the lease, so generations are strictly increasing across holders; after its
Key Vault write a holder records the version it wrote as the gateway's *head* in the same metadata,
again only while it holds the lease. Every version the product writes is tagged with the generation
and the version it was based on.

A reader then trusts Key Vault's latest version only if it is the head: a late write (the writer's
head update never happened, or was refused because the lease had moved on) is a *fork*. A fork is
never pushed to a cluster, makes `status` unhealthy while it is the latest, and the next reconcile
under the lease repairs it by storing the head's token again as the latest version. Older versions
off the chain (an earlier version carries a higher generation) are not the gateway's tokens either.

Without a head (a gateway never reconciled with fencing, or leases kept in-process) the latest
version written by the product is taken as it is: there is nothing to fence it against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from rotation.core.model import TokenInfo


@dataclass(frozen=True, slots=True)
class FenceHead:
    """The Key Vault version a lease holder wrote last for a gateway, kept with the lease."""

    version: str
    fingerprint: str
    generation: int


class Chain(StrEnum):
    HEAD = "head"            # the latest version is the one the last lease holder recorded
    UNFENCED = "unfenced"    # no head recorded yet: the latest version is taken as it is
    FORK = "fork"            # the latest version is not the recorded head: a late or foreign write
    EMPTY = "empty"          # no version at all


def chain_state(latest_version: str | None, latest_fingerprint: str | None, head: FenceHead | None) -> Chain:
    """Whether Key Vault's latest version may be pushed. Compares version ids when the reader knows
    the latest's (a read of the value does; a listing of properties only has the fingerprint tag), and
    the fingerprint always, so a head recorded for another vault's secret of the same name fails."""
    if latest_version is None and latest_fingerprint is None:
        return Chain.EMPTY
    if head is None:
        return Chain.UNFENCED
    if head.fingerprint != latest_fingerprint:
        return Chain.FORK
    if latest_version is not None and head.version != latest_version:
        return Chain.FORK
    return Chain.HEAD


def off_chain(versions: Sequence[TokenInfo]) -> frozenset[str]:
    """Fingerprints of versions written after a later generation had already written: the late writes
    of a holder that had lost the lease. `versions` is oldest first; untagged versions count as
    generation 0 (written before fencing)."""
    highest = -1
    late: set[str] = set()
    for info in versions:
        generation = info.generation if info.generation is not None else 0
        if generation < highest and info.fingerprint:
            late.add(info.fingerprint)
        highest = max(highest, generation)
    return frozenset(late)
