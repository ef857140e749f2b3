"""The Functions blueprint: Event Grid, HTTP and timer entry points. The only importer of azure.functions.

Each handler turns its trigger's payload into plain values, calls the service, and maps the result
to what the trigger expects: the event path raises on transient failure (so Event Grid redelivers)
and returns on permanent failure (so a bad event is not retried for 24 hours).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import azure.functions as func

from rotation.core.errors import (
    IgnoredEvent,
    InvalidEvent,
    InvalidInput,
    RotationError,
    SettingsError,
    SettingsPending,
    TransientError,
    UnknownGateway,
)
from rotation.settings import indexed_sweep_schedule

if TYPE_CHECKING:
    from rotation.core.model import GatewayConfig

# Indexing (the worker importing function_app on every cold start) loads only this blueprint and the
# settings module's schedule read: the service, the parsed settings and the core model are imported by
# the handlers, on first use (the cold-import budget of benchmarks/cold_import.py;
# tests/functions/test_indexing.py lists what may load).

log = logging.getLogger("rotation.triggers")
# The SDKs log every request and response at INFO; in App Insights that drowns the rotation records.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
logging.getLogger("azure.identity").setLevel(logging.WARNING)
# The Azure Monitor exporter logs every transmission at INFO, from its own threads.
logging.getLogger("azure.monitor.opentelemetry.exporter").setLevel(logging.WARNING)
bp = func.Blueprint()  # type: ignore[no-untyped-call]

# The worker passes `context` to a handler that declares it (annotated exactly `func.Context`:
# azure_functions_runtime/functions.py `is_context_required`); the default serves direct calls.
NO_CONTEXT = cast(func.Context, None)

# The timer binding needs a literal schedule at indexing (`indexed_sweep_schedule` says why). A value
# the host could not parse would put the sweep in error: the default is bound instead and /api/health
# says why.
SWEEP_SCHEDULE, SWEEP_SCHEDULE_ERROR = indexed_sweep_schedule()


class RotationIncomplete(TransientError):
    """Raised from the event handler so Event Grid redelivers; the reconcile is idempotent."""


# --- Event Grid ----------------------------------------------------------------------------------


def event_payload(event: func.EventGridEvent | func.CloudEvent) -> dict[str, Any]:
    """Back to the wire shape, so one parser serves both schemas (and the CLI's replay)."""
    if isinstance(event, func.CloudEvent):
        return {"specversion": event.specversion, "id": event.id, "source": event.source, "type": event.type,
                "subject": event.subject, "data": event.get_json()}
    return {"id": event.id, "topic": event.topic, "subject": event.subject, "eventType": event.event_type,
            "data": event.get_json()}


def handle_event(payload: Mapping[str, Any]) -> None:
    """Reconcile the gateway an event names. Raises only when a retry can help."""
    from rotation import bootstrap
    from rotation.core.events import parse_event
    from rotation.core.restarts import Heal

    try:
        event = parse_event(payload)
    except IgnoredEvent as exc:
        log.info("ignored: %s", exc)
        return
    except InvalidEvent as exc:
        log.error("rejected malformed event (not retried): %s", exc)
        return
    try:
        box = bootstrap.container()
        settings = box.settings
        config = settings.registry.find_by_gateway(event.service_id, event.gateway)
    except SettingsPending as exc:
        # e.g. the registry's Key Vault reference not resolved yet: acknowledging would lose the event.
        unreconciled(f"{event.service_id or ''}/gateways/{event.gateway}", exc, event.reason)
        log.warning("event %s: settings not available yet, Event Grid will redeliver: %s", event.event_id, exc)
        raise
    except SettingsError as exc:
        # No reconcile can start; still one outcome record, so the failure alert sees it.
        unreconciled(f"{event.service_id or ''}/gateways/{event.gateway}", exc, event.reason)
        log.error("event %s: rejected (not retried): %s", event.event_id, exc)
        return
    if config is None:
        log.warning("event %s: gateway %s of %s is not in the registry; ignored", event.event_id,
                    event.gateway, event.service_id
                    or "an unnamed service (without a topic, the name must be registered exactly once)")
        return
    try:
        report = box.rotator.reconcile(config, reason=event.reason, deadline_seconds=settings.deadline_seconds,
                                       heal=Heal(instance=event.instance, instance_expires_at=event.expires_at))
    except SettingsPending as exc:
        # e.g. the registry's Key Vault reference not resolved yet: acknowledging would lose the event.
        log.warning("event %s: settings not available yet, Event Grid will redeliver: %s", event.event_id, exc)
        raise
    except (InvalidInput, SettingsError) as exc:
        # Retrying the same event cannot help: log it clearly and acknowledge it.
        log.error("event %s: rejected (not retried): %s", event.event_id, exc)
        return
    except RotationError as exc:
        # Upstream trouble, transient or not (a 403 is fixed by an operator, then the redelivery or the
        # dead-letter replay succeeds): let Event Grid redeliver and finally dead-letter the event.
        log.warning("event %s: failed, Event Grid will redeliver: %s", event.event_id, exc)
        raise
    if not report.ok:
        failed = ", ".join(f"{t.cluster}/{t.namespace}/{t.secret}: {t.outcome.value}" for t in report.failed_targets)
        on = f" (instance {event.instance})" if event.instance else ""
        raise RotationIncomplete(f"event {event.event_id}{on}: {len(report.failed_targets)} target(s) not done "
                                 f"({failed})")


def unreconciled(gateway_id: str, exc: Exception, reason: str) -> None:
    """The `rotation.reconcile` record of a request that failed before its reconcile could start."""
    from rotation import telemetry

    telemetry.emit("rotation.reconcile", {"gatewayId": gateway_id, "rotated": False, "reason": reason,
                                          "outcome": "failed", "errorClass": telemetry.error_class(exc),
                                          "error": str(exc)}, logging.WARNING)


@bp.function_name("on_gateway_token_event")
@bp.event_grid_trigger(arg_name="event")
def on_gateway_token_event(event: func.EventGridEvent, context: func.Context = NO_CONTEXT) -> None:
    from rotation import telemetry

    with telemetry.invocation(context):
        handle_event(event_payload(event))


# --- HTTP ----------------------------------------------------------------------------------------


def _json(status: int, body: Mapping[str, Any] | list[Any], headers: Mapping[str, str] | None = None,
          ) -> func.HttpResponse:
    """Every HTTP body leaves through here: its text goes through the boundary's scrub."""
    from rotation.boundary import clean_tree

    body = clean_tree(json.loads(json.dumps(body, default=str)))
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json",
                             headers=dict(headers or {}))


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> func.HttpResponse:
    return _json(status, {"error": message}, headers)


def _guard(handler: Callable[[func.HttpRequest], func.HttpResponse]) -> Callable[[func.HttpRequest], func.HttpResponse]:
    """Map the error taxonomy to HTTP statuses once, for every route."""

    def run(req: func.HttpRequest, context: func.Context = NO_CONTEXT) -> func.HttpResponse:
        from rotation import telemetry

        with telemetry.invocation(context):
            return _mapped(handler, req)

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


def _mapped(handler: Callable[[func.HttpRequest], func.HttpResponse], req: func.HttpRequest) -> func.HttpResponse:
    try:
        return handler(req)
    except UnknownGateway as exc:
        return _error(404, str(exc))
    except BodyTooLarge as exc:
        return _error(413, str(exc))
    except InvalidInput as exc:
        return _error(400, str(exc))
    except SettingsPending as exc:  # e.g. a Key Vault reference not resolved yet: try again later
        return _error(503, str(exc), {"Retry-After": "30"})
    except SettingsError as exc:
        log.error("misconfigured: %s", exc)
        return _error(500, f"the rotator is misconfigured: {exc}")
    except TransientError as exc:
        return _error(503, str(exc), {"Retry-After": "30"})
    except RotationError as exc:
        return _error(502, str(exc))


def _gateway_from_route(req: func.HttpRequest) -> GatewayConfig:
    from rotation import bootstrap
    from rotation.core.model import check_gateway_name, check_service_name

    service = check_service_name(req.route_params.get("service", ""))
    gateway = check_gateway_name(req.route_params.get("gateway", ""))
    return bootstrap.container().rotator.gateway(service, gateway)


# The routes take a few small fields; a body is refused from its length before it is parsed (json.loads
# of an 80 MB body would hold about twice that in memory before any field could be checked).
MAX_BODY_BYTES = 64 * 1024


class BodyTooLarge(InvalidInput):
    """413: the body is longer than MAX_BODY_BYTES (declared or actual)."""


def _body(req: func.HttpRequest, fields: Mapping[str, type]) -> dict[str, Any]:
    raw = _raw_body(req)
    if not raw.strip():
        return {}
    body = _json_object(raw)
    _check_fields(body, fields)
    return body


def _raw_body(req: func.HttpRequest) -> bytes:
    """The declared length is refused before the body is read; the actual one before it is parsed."""
    declared = (req.headers.get("content-length") or "").strip()
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"request body too large: at most {MAX_BODY_BYTES} bytes")
    raw = req.get_body()
    if len(raw) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"request body too large: at most {MAX_BODY_BYTES} bytes")
    return raw


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("request body must be JSON") from None
    except RecursionError:  # e.g. 100k nested arrays: the client's mistake, not an unhandled 500
        raise InvalidInput("request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    return body


def _check_fields(body: dict[str, Any], fields: Mapping[str, type]) -> None:
    """Only the route's fields, each of its type (a JSON true is not a number)."""
    for key, value in body.items():
        if key not in fields:
            raise InvalidInput(f"unknown field {str(key)[:40]!r} (allowed: {', '.join(fields)})")
        if not isinstance(value, fields[key]) or (fields[key] is not bool and isinstance(value, bool)):
            raise InvalidInput(f"field {key!r} must be a {fields[key].__name__}")
    reason = body.get("reason")
    if isinstance(reason, str) and len(reason) > 200:
        raise InvalidInput("field 'reason' is longer than 200 characters")


@bp.function_name("rotate")
@bp.route(route="gateways/{service}/{gateway}/rotate", methods=["POST"])
@_guard
def rotate(req: func.HttpRequest) -> func.HttpResponse:
    from rotation import bootstrap
    from rotation.core.model import check_gateway_name, check_service_name

    body = _body(req, {"force": bool, "dryRun": bool, "reason": str})
    try:
        config = _gateway_from_route(req)
    except SettingsError as exc:
        service, gateway = req.route_params.get("service", ""), req.route_params.get("gateway", "")
        unreconciled(f"{check_service_name(service)}/gateways/{check_gateway_name(gateway)}", exc, "http request")
        raise
    box = bootstrap.container()
    report = box.rotator.reconcile(
        config, reason=body.get("reason") or "http request", force=body.get("force", False),
        dry_run=body.get("dryRun", False), deadline_seconds=box.settings.deadline_seconds,
    )
    return _json(200 if report.ok else 207, report.to_dict())


@bp.function_name("list_gateways")
@bp.route(route="gateways", methods=["GET"])
@_guard
def list_gateways(req: func.HttpRequest) -> func.HttpResponse:
    from rotation import bootstrap

    box = bootstrap.container()
    statuses = box.rotator.status(timeout=box.settings.deadline_seconds)
    return _json(200, {"gateways": [s.to_dict() for s in statuses]})


@bp.function_name("get_gateway")
@bp.route(route="gateways/{service}/{gateway}", methods=["GET"])
@_guard
def get_gateway(req: func.HttpRequest) -> func.HttpResponse:
    from rotation import bootstrap

    config = _gateway_from_route(req)
    box = bootstrap.container()
    (status,) = box.rotator.status([config], timeout=box.settings.deadline_seconds)
    return _json(200, status.to_dict())


# An HTTP-triggered function must answer within 230 s whatever functionTimeout says (Azure Load
# Balancer's idle timeout; Microsoft Learn, function app timeout duration): phase 1 (the deadline) and
# phase 2 (re-read, regenerate) need room beside the rollout wait.
HTTP_ROLLOUT_WAIT_MAX = 150


# Regenerating keys invalidates every token of a key: the host's master (admin) key only, not any
# function key.
@bp.function_name("roll_keys")
@bp.route(route="gateways/{service}/{gateway}/roll-keys", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@_guard
def roll_keys(req: func.HttpRequest) -> func.HttpResponse:
    from rotation import bootstrap
    from rotation.core.caller import caller_from_headers
    from rotation.core.model import KeyType
    from rotation.settings import auth_enabled

    body = _body(req, {"fromKey": str, "dryRun": bool, "waitSeconds": int, "confirmRestarted": bool})
    wait_seconds = body.get("waitSeconds", 60)
    if not 0 <= wait_seconds <= HTTP_ROLLOUT_WAIT_MAX:
        raise InvalidInput(f"field 'waitSeconds' must be between 0 and {HTTP_ROLLOUT_WAIT_MAX}: an HTTP-triggered "
                           "function must answer within 230 s (Azure Load Balancer); wait longer with the CLI, "
                           "or call again to resume")
    config = _gateway_from_route(req)
    if body.get("fromKey") not in ("primary", "secondary"):
        raise InvalidInput("field 'fromKey' is required: the key to roll away from and regenerate, "
                           "'primary' or 'secondary'")
    box = bootstrap.container()
    caller = caller_from_headers(req.headers, auth_enabled())
    requested_by = caller.to_dict() if caller else None
    log.warning("key roll of %s requested by %s", config.ref, json.dumps(requested_by))
    report = box.rotator.roll_keys(config, from_key=KeyType(body["fromKey"]),
                                   deadline_seconds=box.settings.deadline_seconds,
                                   rollout_wait_seconds=wait_seconds, dry_run=body.get("dryRun", False),
                                   confirm_restarted=body.get("confirmRestarted", False))
    return _json(200 if report.ok else 409, {**report.to_dict(), "requestedBy": requested_by})


@bp.function_name("health")
@bp.route(route="health", methods=["GET"])
def health(req: func.HttpRequest, context: func.Context = NO_CONTEXT) -> func.HttpResponse:
    from rotation import bootstrap, telemetry
    from rotation.app.status import LOCAL_LEASE_WARNING

    with telemetry.invocation(context):
        try:
            settings = bootstrap.container().settings
        except SettingsError as exc:
            return _json(503, {"status": "unhealthy", "error": str(exc)})
        body: dict[str, Any] = {"status": "ok", "gateways": len(settings.registry.gateways),
                                "clusters": len(settings.registry.clusters), "sweepSchedule": SWEEP_SCHEDULE}
        if not settings.lease_container_url:
            body["warning"] = LOCAL_LEASE_WARNING
        if SWEEP_SCHEDULE_ERROR:
            body["sweepScheduleError"] = SWEEP_SCHEDULE_ERROR
        return _json(200, body)


# --- timer ---------------------------------------------------------------------------------------


@bp.function_name("sweep")
@bp.timer_trigger(arg_name="timer", schedule=SWEEP_SCHEDULE, run_on_startup=False)
def sweep(timer: func.TimerRequest, context: func.Context = NO_CONTEXT) -> None:
    from rotation import telemetry

    with telemetry.invocation(context):
        run_sweep()


def run_sweep() -> None:
    """One `rotation.sweep` record per run, whether it got to the gateways or not."""
    from rotation import bootstrap, telemetry

    try:
        box = bootstrap.container()
        result = box.rotator.sweep(deadline_seconds=box.settings.deadline_seconds)
    except RotationError as exc:
        telemetry.emit("rotation.sweep", {"outcome": "failed", "errorClass": telemetry.error_class(exc),
                                          "error": str(exc), "schedule": SWEEP_SCHEDULE,
                                          "scheduleError": SWEEP_SCHEDULE_ERROR}, logging.ERROR)
        raise
    summary = result.to_dict()
    del summary["reports"]
    telemetry.emit("rotation.sweep", {**summary, "outcome": "ok" if result.ok else "failed",
                                      "schedule": SWEEP_SCHEDULE, "scheduleError": SWEEP_SCHEDULE_ERROR},
                   logging.ERROR if not result.ok else logging.WARNING if SWEEP_SCHEDULE_ERROR else logging.INFO)
