"""`python -m rotation replay-deadletter`: reconcile the gateways of events Event Grid gave up on.

Event Grid dead-letters an event after its retries ran out (e.g. a cluster was unreachable for a day)
or on an error it does not retry. The events carry no state worth replaying one by one: what they say
is "this gateway's token needs attention". So the replay is level-triggered like every other path:
each event is parsed with the trigger's own parser, events are grouped by gateway, and every named
gateway is reconciled **once**, however many per-instance events name it. The reconcile re-derives
what to do from Key Vault and the clusters, so replaying an event whose gateway was fixed meanwhile
writes nothing — except that, like a live event, a replayed NearExpiry/Expired event for a gateway
whose Key Vault and Secrets are current heals: the instances it names still run an old token, so the
workloads that last restarted before Key Vault's token are restarted, and a target with no `restart`
list fails (its blob is kept; the report names the instances).

A blob is deleted only when every event in it was replayed and its gateway reconciled OK; a blob with
a skipped (malformed, other type, unknown gateway) or failed event is kept for a human to look at,
as is any blob that could not be read. `--dry-run` reconciles with `dry_run=True` (nothing written
anywhere) and deletes nothing; `--keep` replays but deletes nothing.

Exit code: 0 when every replayed gateway is OK (skipped events are reported but are not failures:
retrying cannot fix them); 1 when a gateway failed, a blob could not be downloaded or deleted; 2 for
bad input or configuration. Reports carry token fingerprints, never tokens.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TextIO

from rotation.core.errors import IgnoredEvent, InvalidEvent, InvalidInput, RotationError, SettingsError
from rotation.core.events import GatewayTokenEvent, parse_event
from rotation.core.model import GatewayConfig, RotationReport
from rotation.core.redact import url_shown
from rotation.core.restarts import Heal

if TYPE_CHECKING:
    from rotation.adapters.deadletter import DeadLetter, DeadLetteredEvent, DeadLetterSource
    from rotation.bootstrap import Container
    from rotation.settings import Settings


@dataclass
class EventResult:
    """What became of one dead-lettered event."""

    event_id: str | None
    event_type: str | None
    gateway: str | None  # SERVICE/GATEWAY (or just the gateway when the event names no service)
    dead_letter_reason: str | None
    delivery_attempts: int | None
    last_outcome: str | None
    outcome: str  # replayed | planned | failed | skipped
    detail: str | None = None
    key: tuple[str, str] | None = None  # the registry gateway it was grouped under
    instance: str | None = None  # the gateway instance (pod) the event came from
    instance_expires_at: datetime | None = None  # when that instance's token expires(d)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.event_id, "type": self.event_type, "gateway": self.gateway,
                "deadLetterReason": self.dead_letter_reason, "deliveryAttempts": self.delivery_attempts,
                "lastDeliveryOutcome": self.last_outcome, "outcome": self.outcome, "detail": self.detail}


@dataclass
class BlobResult:
    name: str
    last_modified: str | None
    events: list[EventResult] = field(default_factory=list)
    action: str = "kept"  # deleted | would_delete | kept | delete_failed
    note: str | None = None  # why it was kept, or the read/delete error
    failed: bool = False  # counts against the exit code (download or delete failed)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "lastModified": self.last_modified, "action": self.action,
                "note": self.note, "events": [e.to_dict() for e in self.events]}


def _since(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"--since must be a date YYYY-MM-DD, got {text[:40]!r}") from None


def _short_type(payload: Any) -> str | None:
    if not hasattr(payload, "get"):
        return None
    value = payload.get("type") if "specversion" in payload else payload.get("eventType")
    return value.rsplit(".", 1)[-1][:80] if isinstance(value, str) and value else None


def _display(event: GatewayTokenEvent) -> str:
    service = event.service_id.rsplit("/", 1)[-1] if event.service_id else None
    return f"{service}/{event.gateway}" if service else event.gateway


def _classify(item: DeadLetteredEvent, box: Container) -> tuple[EventResult, GatewayConfig | None]:
    """Parse like the trigger does; a permanent problem becomes `skipped` with its reason."""
    result = EventResult(item.event_id, _short_type(item.payload), None, item.reason, item.delivery_attempts,
                         item.last_outcome, "skipped")
    try:
        event = parse_event(item.payload)
    except IgnoredEvent as exc:
        result.detail = f"ignored: {exc}"
        return result, None
    except InvalidEvent as exc:
        result.detail = f"malformed: {exc}"
        return result, None
    result.event_id = event.event_id
    result.gateway = _display(event)
    result.instance, result.instance_expires_at = event.instance, event.expires_at
    config = box.settings.registry.find_by_gateway(event.service_id, event.gateway)
    if config is None:
        result.detail = (f"gateway {event.gateway} of {event.service_id or 'an unnamed service'} "
                         "is not in the registry")
        return result, None
    result.gateway = str(config.ref)
    result.key = config.ref.key
    return result, config


def replay(args: argparse.Namespace, out: TextIO) -> int:
    """The `replay-deadletter` command (args: container_url, since, dry_run, keep, json)."""
    from rotation import bootstrap
    from rotation.adapters.deadletter import DeadLetterSource

    box = bootstrap.container()
    url = _container_url(getattr(args, "container_url", None), box.settings)
    since = _since(getattr(args, "since", None))
    dry_run = bool(getattr(args, "dry_run", False))
    keep = bool(getattr(args, "keep", False))
    source = DeadLetterSource(url, box.credential)
    try:
        letters = source.list(since)
        blobs, groups = _collect(letters, box)
        reports = _reconcile(groups, box, dry_run)
        _settle(blobs, reports, source, delete=not (dry_run or keep), dry_run=dry_run)
    finally:
        source.close()

    ok = all(r.ok for r in reports.values()) and not any(b.failed for b in blobs)
    summary = _summary(blobs, reports)
    if getattr(args, "json", False):
        json.dump({"container": source.url, "since": since.isoformat() if since else None, "dryRun": dry_run,
                   "keep": keep, "ok": ok, "summary": summary,
                   "gateways": [r.to_dict() for r in reports.values()],
                   "blobs": [b.to_dict() for b in blobs]}, out, indent=2, default=str)
        print(file=out)
    else:
        _print(source.url, blobs, list(reports.values()), summary, dry_run, out)
    return 0 if ok else 1


def _container_url(given: str | None, settings: Settings) -> str:
    """--container-url wins over DEADLETTER_BLOB_URL; one of them must name the container."""
    url = given or settings.deadletter_blob_url
    if not url:
        raise SettingsError("no dead-letter container: pass --container-url or set DEADLETTER_BLOB_URL")
    if given:
        _check_given_url(given, settings)
    return url


def _check_given_url(given: str, settings: Settings) -> None:
    """It gets the operator's Storage token (or the SAS it carries): DEADLETTER_BLOB_URL's host rule (a
    blob endpoint of the cloud; a loopback Azurite with the local emulators), checked before any
    credential is asked. The query is the SAS, which the setting cannot carry."""
    base, _, query = given.partition("?")
    why = settings.cloud.blob_problem(base.lower(), settings.local_emulators)
    if why is None and query and "sig=" not in query:
        why = "may carry a query only as a SAS (sig=)"
    if why is not None:
        raise SettingsError(f"--container-url {url_shown(given)!r} {why}")


def _collect(letters: Sequence[DeadLetter], box: Container,
             ) -> tuple[list[BlobResult], dict[tuple[str, str], tuple[GatewayConfig, list[EventResult]]]]:
    blobs: list[BlobResult] = []
    groups: dict[tuple[str, str], tuple[GatewayConfig, list[EventResult]]] = {}
    for letter in letters:
        blob = BlobResult(letter.name, letter.last_modified.isoformat() if letter.last_modified else None)
        blobs.append(blob)
        if letter.error is not None:
            blob.note = f"unreadable: {letter.error}"
            blob.failed = letter.transient
            continue
        for item in letter.events:
            result, config = _classify(item, box)
            blob.events.append(result)
            if config is not None:
                groups.setdefault(config.ref.key, (config, []))[1].append(result)
    return blobs, groups


def _reconcile(groups: dict[tuple[str, str], tuple[GatewayConfig, list[EventResult]]], box: Container,
               dry_run: bool) -> dict[tuple[str, str], RotationReport]:
    """One reconcile per gateway (in parallel, bounded like the sweep), whatever the number of events."""
    if not groups:
        return {}
    settings = box.settings

    def run(config: GatewayConfig, events: list[EventResult]) -> RotationReport:
        ids = ", ".join(e.event_id or "?" for e in events[:3]) + (", …" if len(events) > 3 else "")
        reason = f"dead-letter replay of {len(events)} event(s) ({ids})"
        return box.rotator.reconcile_safely(config, reason=reason[:200], dry_run=dry_run,
                                            deadline_seconds=settings.deadline_seconds, heal=_heal(events))

    with ThreadPoolExecutor(max_workers=min(len(groups), settings.sweep_concurrency),
                            thread_name_prefix="replay") as pool:
        futures = {key: pool.submit(run, config, events) for key, (config, events) in groups.items()}
        reports = {key: f.result() for key, f in futures.items()}
    for key, (_, events) in groups.items():
        report = reports[key]
        for e in events:
            if report.ok:
                e.outcome = "planned" if dry_run else "replayed"
            else:
                e.outcome = "failed"
                e.detail = _failure(report)
    return reports


def _heal(events: Sequence[EventResult]) -> Heal:
    """Like a live event (rotation.triggers): the instances named may still run an old token, so the
    reconcile restarts the workloads that predate Key Vault's token (one reconcile for all of them).
    The most stale instance decides; an event without an expiry is taken at its word."""
    instances = list(dict.fromkeys(e.instance for e in events if e.instance))
    shown = ", ".join(instances[:3]) + (f" and {len(instances) - 3} more" if len(instances) > 3 else "")
    expiries = [e.instance_expires_at for e in events]
    stalest = None if any(x is None for x in expiries) else min(x for x in expiries if x is not None)
    return Heal(instance=shown or None, instance_expires_at=stalest)


def _failure(report: RotationReport) -> str:
    if report.error:
        return report.error
    return "; ".join(f"{t.cluster}/{t.namespace}/{t.secret}: {t.outcome.value}" + (f" ({t.error})" if t.error else "")
                     for t in report.failed_targets)


def _settle(blobs: list[BlobResult], reports: dict[tuple[str, str], RotationReport], source: DeadLetterSource, *,
            delete: bool, dry_run: bool) -> None:
    """Delete a blob only when every event in it was replayed and its gateway is OK."""
    for blob in blobs:
        if blob.note is not None:  # unreadable
            continue
        if not blob.events:
            blob.note = "no events in it"
            continue
        pending = [e for e in blob.events if e.outcome not in ("replayed", "planned")]
        if pending:
            kinds = sorted({e.outcome for e in pending})
            blob.note = f"{len(pending)} event(s) {'/'.join(kinds)}"
            continue
        if dry_run:
            blob.action = "would_delete"
        elif not delete:
            blob.note = "--keep"
        else:
            try:
                source.delete(blob.name)
                blob.action = "deleted"
            except RotationError as exc:
                blob.action, blob.note, blob.failed = "delete_failed", str(exc), True


def _summary(blobs: Sequence[BlobResult], reports: dict[tuple[str, str], RotationReport]) -> dict[str, int]:
    events = [e for b in blobs for e in b.events]
    return {
        "blobs": len(blobs),
        "events": len(events),
        "replayed": sum(e.outcome in ("replayed", "planned") for e in events),
        "skipped": sum(e.outcome == "skipped" for e in events),
        "failed": sum(e.outcome == "failed" for e in events),
        "gateways": len(reports),
        "gatewaysFailed": sum(not r.ok for r in reports.values()),
        "deleted": sum(b.action == "deleted" for b in blobs),
        "kept": sum(b.action != "deleted" for b in blobs),
        "unreadable": sum(b.note is not None and b.note.startswith("unreadable") for b in blobs),
    }


def _print(url: str, blobs: Sequence[BlobResult], reports: Sequence[RotationReport], summary: dict[str, int],
           dry_run: bool, out: TextIO) -> None:
    from rotation.boundary import shown
    from rotation.printing import print_report

    mode = " (dry run: nothing written, nothing deleted)" if dry_run else ""
    print(f"dead-letter replay of {shown(url)}{mode}", file=out)
    if not blobs:
        print("  no dead-lettered events", file=out)
        return
    for report in reports:
        print_report(report, out)
    for blob in blobs:
        _print_blob(blob, out)
    verb = "would replay" if dry_run else "replayed"
    print(f"summary: {summary['gateways']} gateway(s) {verb} ({summary['gatewaysFailed']} failed); "
          f"events: {summary['replayed']} {verb}, {summary['skipped']} skipped, {summary['failed']} failed; "
          f"blobs: {summary['deleted']} deleted, {summary['kept']} kept"
          + (f", {summary['unreadable']} unreadable" if summary["unreadable"] else ""), file=out)


def _print_blob(blob: BlobResult, out: TextIO) -> None:
    from rotation.boundary import shown

    when = f" ({blob.last_modified})" if blob.last_modified else ""
    action = blob.action.replace("_", " ")
    # Blob names, event ids, types and reasons are whatever the blob holds: escaped.
    print(f"blob {shown(blob.name)}{when}: {action}" + (f" ({shown(blob.note)})" if blob.note else ""), file=out)
    for e in blob.events:
        dead = shown(e.dead_letter_reason or "-")
        if e.delivery_attempts is not None:
            dead += f" after {e.delivery_attempts} attempt(s)"
        detail = f": {shown(e.detail)}" if e.detail else ""
        print(f"  {e.outcome:8} {shown(e.event_id or '(no id)')} {shown(e.event_type or '-')} "
              f"{shown(e.gateway or '-')} [dead-lettered: {dead}]{detail}", file=out)
