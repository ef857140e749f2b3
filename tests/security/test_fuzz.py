"""Property-based fuzzing of the two parsers that take input from outside: the event parser (Event
Grid delivers whatever a topic publishes) and the registry loader (an app setting someone edits).

The property: any input either parses or raises a `RotationError` subclass (which the handlers map
to "log and acknowledge" / "unhealthy, with the field named"). Anything else (KeyError, TypeError,
RecursionError...) would escape the handler as a crash, and on the event path Event Grid would
retry a malformed event for 24 hours.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotation.core.errors import RegistryError, RotationError
from rotation.core.events import EventKind, parse_event
from rotation.core.registry import load_registry
from tests.samples import CA_DATA, SERVICE_ID, gateway_id

# Strings that exercise the validators: separators, encodings, control and non-ASCII characters.
HOSTILE = st.sampled_from(["..", "/", "%2F", "%2f", "\\", "\x00", "\n", "gw\n", "ü", "Ⅻ", "g" * 300, "",
                           " ", "gw-1/../x", "a b", "&", "?", "#", "$(x)", "\ud800"])
TEXT = st.one_of(st.text(max_size=40), HOSTILE, st.sampled_from(["gw-1", "apim", "east", SERVICE_ID]))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)
EVENT_TYPES = st.sampled_from([k.value for k in EventKind] + ["Microsoft.Storage.BlobCreated", ""])


def _maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(value, JSON)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """Shaped like an APIM event (either schema), with any field replaced by junk."""
    cloud = draw(st.booleans())
    gateway = draw(_maybe(st.one_of(TEXT, st.just(gateway_id("gw-1")))))
    data = {"gatewayInfo": draw(_maybe(st.fixed_dictionaries({"gatewayId": st.just(gateway),
                                                               "instanceId": _maybe(TEXT)}))),
            "tokenInfo": draw(_maybe(st.fixed_dictionaries({
                draw(st.sampled_from(["expiresAtUtc", "expiredAtUtc", "expiresAt"])):
                    _maybe(st.sampled_from(["2026-11-29T08:56:00.0000000Z", "2026-11-29", "", "Z", "9999-99-99"]))
            })))}
    event: dict[str, Any] = {
        "id": draw(_maybe(TEXT)),
        ("type" if cloud else "eventType"): draw(_maybe(EVENT_TYPES)),
        ("source" if cloud else "topic"): draw(_maybe(st.one_of(st.just(SERVICE_ID), TEXT))),
        "subject": draw(_maybe(st.builds(lambda g, i: f"/gateways/{g}/{i}", TEXT, TEXT))),
        "data": draw(_maybe(st.just(data))),
    }
    if cloud:
        event["specversion"] = "1.0"
    drop = draw(st.sets(st.sampled_from(sorted(event)), max_size=2))
    return {k: v for k, v in event.items() if k not in drop}


@given(events())
def test_event_parser_raises_only_domain_errors_on_shaped_events(payload: dict[str, Any]) -> None:
    with contextlib.suppress(RotationError):
        parse_event(payload)


@given(JSON)
def test_event_parser_raises_only_domain_errors_on_any_json(payload: Any) -> None:
    with contextlib.suppress(RotationError):
        parse_event(payload)


@st.composite
def registries(draw: st.DrawFn) -> dict[str, Any]:
    """Shaped like a registry, with any field replaced by junk or hostile names."""
    cluster = {"name": draw(_maybe(st.sampled_from(["east", "west"]))),
               "auth": draw(_maybe(st.sampled_from(["aks", "kubeconfig"]))),
               "server": draw(_maybe(st.just("https://east-dns-4f1c2a9b.hcp.westeurope.azmk8s.io:443"))),
               "caData": draw(_maybe(st.just(CA_DATA))),
               "kubeconfigSecret": draw(_maybe(st.just("kubeconfig-west")))}
    target = {"cluster": draw(_maybe(st.just("east"))), "namespace": draw(_maybe(st.just("apim"))),
              "secret": draw(_maybe(st.just("gw-token"))), "key": draw(_maybe(st.just("value"))),
              "format": draw(_maybe(st.sampled_from(["{token}", "GatewayKey {token}", "{x}", "{", "{token}{token}"]))),
              "restart": draw(_maybe(st.lists(_maybe(st.sampled_from(["deployment/gw", "pod/x", "deployment/"])),
                                              max_size=3)))}
    gateway = {"id": draw(_maybe(st.one_of(st.just(gateway_id("gw-1")), st.builds(gateway_id, TEXT)))),
               "keyVaultSecret": draw(_maybe(st.just("kv-secret"))),
               "keyType": draw(_maybe(st.sampled_from(["primary", "secondary", "tertiary"]))),
               "targets": draw(_maybe(st.lists(st.just(target), max_size=2)))}
    for obj in (cluster, target, gateway):
        for key in draw(st.sets(st.sampled_from(sorted(obj)), max_size=3)):
            del obj[key]
    return {"clusters": draw(_maybe(st.lists(st.just(cluster), max_size=2))),
            "gateways": draw(_maybe(st.lists(st.just(gateway), max_size=2)))}


@given(registries())
def test_registry_loader_raises_only_registry_errors(document: dict[str, Any]) -> None:
    with contextlib.suppress(RegistryError):
        load_registry(document)


@given(st.one_of(st.text(max_size=200), JSON.map(json.dumps)))
def test_registry_loader_raises_only_registry_errors_on_any_text(text: str) -> None:
    with contextlib.suppress(RegistryError):
        load_registry(text)


def test_registry_loader_survives_deeply_nested_json() -> None:
    with pytest.raises(RegistryError):
        load_registry("[" * 100_000)


@st.composite
def kubeconfigs(draw: st.DrawFn) -> Any:
    """Shaped like a kubeconfig, with any field replaced by junk or a refused field added."""
    from tests.security.test_kubeconfig import good

    doc: Any = good()
    places: list[Any] = [doc, doc["clusters"][0], doc["clusters"][0]["cluster"], doc["users"][0],
                         doc["users"][0]["user"], doc["contexts"][0]["context"]]
    for _ in range(draw(st.integers(0, 3))):
        node = draw(st.sampled_from(places))
        key = draw(st.one_of(TEXT, st.sampled_from(["exec", "token", "server", "tokenFile", "name",
                                                     "client-key-data", "certificate-authority-data"])))
        node[key] = draw(JSON)
    return doc


@given(kubeconfigs())
def test_kubeconfig_validator_raises_only_permanent_errors(doc: Any) -> None:
    from rotation.adapters.kubeconfig import validate_kubeconfig
    from rotation.core.errors import PermanentError

    with contextlib.suppress(PermanentError):
        validate_kubeconfig(doc, cluster="west", secret="kubeconfig-west")
