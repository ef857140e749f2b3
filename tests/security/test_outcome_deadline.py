"""The outcome publisher's token request is bounded by the caller's remaining time, like every call.

azure-core asks the credential outside a call's own timeouts (BearerTokenCredentialPolicy, as in
test_identity_faults.py), so `connection_timeout`/`read_timeout` on `send` do not bound it: without
`token_deadline` the request was bounded only by BoundedCredential's 20 s default. The handler gave up
after its budget but the publisher's two worker threads stayed stuck on a stalled identity endpoint,
so the next outcome events queued behind them and were dropped even once the endpoint answered again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from rotation.adapters.credential import build_credential
from rotation.adapters.outcomes import EventGridOutcomePublisher
from rotation.core.model import RotationReport
from tests.security.conftest import GATEWAY_ID, App


@pytest.fixture
def identity(app: App) -> Iterator[Any]:
    app.fakes.identity.clear_faults()
    yield app.fakes.identity
    app.fakes.identity.clear_faults()


def test_a_stalled_identity_endpoint_does_not_hold_the_publisher_past_the_callers_time(
        app: App, identity: Any) -> None:
    identity.add_fault({"method": "GET", "path": "/msi/.*", "delaySeconds": 25, "status": 500, "times": 2})
    publisher = EventGridOutcomePublisher(app.fakes.eventgrid.endpoint, build_credential(retry_total=0))
    report = RotationReport(gateway_id=GATEWAY_ID, rotated=True, expires_at=None, key_type=None,
                            fingerprint=None, reason="test", duration_ms=1, targets=())
    before = len(app.fakes.eventgrid.events())
    for _ in range(2):
        publisher.publish(report, timeout=1.0)  # the handler's remaining time: gives up after 1 s
    assert len(app.fakes.eventgrid.events()) == before
    publisher.publish(report, timeout=3.0)  # the endpoint answers again: this one is delivered
    events = app.fakes.eventgrid.events()[before:]
    assert [e["event"]["subject"] for e in events] == [GATEWAY_ID]


def test_the_lease_token_request_is_bounded_by_the_wait(app: App, identity: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from rotation.adapters import credential
    from rotation.adapters.lease import BlobLease

    # BlobLease.acquire runs its calls under token_deadline; unbounded, this would fail in 5 s.
    monkeypatch.setattr(credential, "DEFAULT_TOKEN_SECONDS", 5.0)

    identity.add_fault({"method": "GET", "path": "/msi/.*", "delaySeconds": 25, "status": 500, "times": 2})
    lease = BlobLease(app.sentinel.url + "/gateway-leases", build_credential(retry_total=0))
    started = time.monotonic()
    try:
        with pytest.raises(Exception):  # noqa: B017 - any failure, as long as it is on time
            lease.acquire("gw-1", duration=15, wait=1.0)
    finally:
        lease.close()
    assert time.monotonic() - started < 3.0
