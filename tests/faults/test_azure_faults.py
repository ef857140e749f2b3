"""ARM and Key Vault failing the way Azure fails: 429 with Retry-After, 5xx, answers slower than the
deadline. Injected by the devstack fakes over HTTPS; the app under test is the real function handler
with the real SDKs. Transient failures raise (so Event Grid redelivers); the redelivery finishes the
job; no cluster ever sees a token Key Vault does not hold."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from devstack import stack as devstack
from rotation.core.errors import TransientError
from tests.faults.conftest import FaultWorld, secret_name
from tests.functions.conftest import deliver

GENERATE = "/gateways/gw-shared/generateToken"
SECRET_PATH = f"/secrets/{secret_name('gw-shared')}"


def event(gateway: str = "gw-shared", instance: str = "pod-1", event_id: str | None = None) -> dict[str, Any]:
    """A GatewayTokenNearExpiry delivery in the Event Grid schema, as APIM sends one per instance."""
    return {"id": event_id or str(uuid.uuid4()), "topic": devstack.SERVICE_ID,
            "subject": f"/gateways/{gateway}/{instance}",
            "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry",
            "eventTime": "2026-11-26T08:56:12.4410000Z", "dataVersion": "1",
            "data": {"gatewayInfo": {"gatewayId": gateway, "instanceId": instance},
                     "tokenInfo": {"expiresAtUtc": "2026-11-29T08:56:00.0000000Z"}}}


def test_arm_429_with_retry_after_is_retried_by_azure_core(fw: FaultWorld, record: dict[str, str]) -> None:
    fw.fault("arm", method="POST", path=GENERATE, status=429, retryAfter=1, times=1)
    deliver(event())  # no exception: the SDK waited Retry-After and the second call succeeded
    calls = fw.calls("arm", "generateToken")
    assert [c["status"] for c in calls] == [429, 200]
    fw.assert_converged()
    fw.assert_nothing_lost()
    record.update(scenario="ARM generateToken answers 429 with Retry-After: 1",
                  outcome="azure-core waits and retries; one event, targets `updated`")


def test_arm_5xx_raises_writes_nothing_and_the_redelivery_rotates(fw: FaultWorld, record: dict[str, str]) -> None:
    fw.use(ROTATION_DEADLINE_SECONDS="2")
    fw.fault("arm", method="POST", path=GENERATE, status=503, times=0)
    before = fw.snapshot()
    # azure-core retries a 5xx with exponential backoff; the adapters' DeadlineRetryPolicy stops
    # before a wait that would end after the deadline, so the last answer (503) is what is reported.
    with pytest.raises(TransientError, match="ARM generateToken for apim-devstack/gw-shared failed: 503"):
        deliver(event())
    attempts = len(fw.calls("arm", "generateToken"))
    assert attempts >= 1
    after = fw.snapshot()
    assert after["vault"] == before["vault"] and after["targets"] == before["targets"]
    fw.assert_nothing_lost()
    fw.clear_faults()
    deliver(event())  # Event Grid's redelivery
    fw.assert_converged()
    fw.assert_nothing_lost()
    record.update(scenario="ARM generateToken answers 503 on every attempt",
                  outcome=f"{attempts} SDK attempts (azure-core backoff), event raised (redelivered), "
                          "nothing written; redelivery `updated`")


def test_arm_slower_than_the_deadline(fw: FaultWorld, record: dict[str, str]) -> None:
    fw.use(ROTATION_DEADLINE_SECONDS="2")
    fw.fault("arm", method="POST", path=GENERATE, delaySeconds=4, times=0)
    before = fw.snapshot()
    with pytest.raises(TransientError, match="generateToken"):
        deliver(event())
    after = fw.snapshot()
    assert after["vault"] == before["vault"] and after["targets"] == before["targets"]
    fw.clear_faults()
    deliver(event())
    fw.assert_converged()
    # The abandoned call still completes in the fake (a token nobody stored: generating one never
    # invalidates another). Wait for it so it lands in this test's call log, not the next one's.
    end = time.monotonic() + 10
    while len(fw.calls("arm", "generateToken")) < 2 and time.monotonic() < end:
        time.sleep(0.1)
    fw.assert_nothing_lost()
    record.update(scenario="ARM generateToken answers after 4 s, deadline 2 s",
                  outcome="read timeout inside the deadline, event raised, nothing written; redelivery `updated`")


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_key_vault_5xx(fw: FaultWorld, record: dict[str, str], method: str) -> None:
    fw.use(ROTATION_DEADLINE_SECONDS="2")
    fw.fault("keyvault", method=method, path=SECRET_PATH, status=500, times=0)
    before = fw.snapshot()
    with pytest.raises(TransientError, match=f"Key Vault {'get' if method == 'GET' else 'set'} of secret"):
        deliver(event())
    after = fw.snapshot()
    assert after["vault"] == before["vault"] and after["targets"] == before["targets"]
    generated = len(fw.calls("arm", "generateToken"))
    assert generated == (0 if method == "GET" else 1)  # a read failure stops before ARM
    fw.clear_faults()
    deliver(event())
    fw.assert_converged()
    fw.assert_nothing_lost()
    what = "read" if method == "GET" else "write"
    record.update(scenario=f"Key Vault answers 500 to every {what} of the token",
                  outcome="event raised; no cluster touched"
                          + (" (the generated token was never handed out)" if method == "PUT" else
                             ", ARM not called") + "; redelivery `updated`")


@pytest.mark.parametrize(("service", "method", "path", "status", "message"), [
    ("arm", "POST", GENERATE, 429, "ARM generateToken"),
    ("keyvault", "GET", SECRET_PATH, 503, "Key Vault get of secret"),
])
def test_a_retry_after_longer_than_the_deadline_does_not_hold_the_handler(
        fw: FaultWorld, record: dict[str, str], service: str, method: str, path: str, status: int,
        message: str) -> None:
    """azure-core alone would sleep the whole Retry-After, then notice the deadline had passed."""
    fw.use(ROTATION_DEADLINE_SECONDS="2")
    fw.fault(service, method=method, path=path, status=status, retryAfter=30, times=1)
    before = fw.snapshot()
    started = time.monotonic()
    with pytest.raises(TransientError, match=f"{message}.*{status}"):
        deliver(event())
    took = time.monotonic() - started
    assert took < 3.0, f"the handler was held {took:.1f} s by a Retry-After of 30 s"
    assert fw.snapshot()["targets"] == before["targets"]
    assert [c["status"] for c in fw.calls(service, path, method)] == [status]  # not retried
    fw.clear_faults()
    deliver(event())
    fw.assert_converged()
    fw.assert_nothing_lost()
    record.update(scenario=f"{'ARM generateToken' if service == 'arm' else 'Key Vault read'} answers "
                           f"{status} with Retry-After: 30, deadline 2 s",
                  outcome=f"not retried (the wait would pass the deadline): event raised after "
                          f"{took:.1f} s, nothing written; redelivery `updated`")
