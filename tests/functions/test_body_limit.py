"""Request bodies are bounded before they are parsed.

The HTTP routes take a few small fields; json.loads of an 80 MB body holds the bytes, the decoded
str and the parsed objects at once (CPython's json decoder builds the whole document), about 160 MiB
before `reason`'s own length check could answer 400. The Functions host lets bodies up to 100 MB
through (Microsoft Learn, "Azure Functions HTTP trigger": limits, maxRequestBodySize), so the handler
answers 413 (RFC 9110 §15.5.14 Content Too Large) past a small limit, from the length alone. The body
is read with azure.functions' own HttpRequest (`get_body`), as the worker hands it over.
"""

from __future__ import annotations

import json

import azure.functions as func

from rotation.triggers import MAX_BODY_BYTES
from tests.functions.conftest import function, http
from tests.service.conftest import World

URL = "http://localhost/api/gateways/contoso-apim/gw-1/rotate"
ROUTE = {"service": "contoso-apim", "gateway": "gw-1"}


def test_a_body_past_the_limit_is_413_and_writes_nothing(app_world: World) -> None:
    body = b'{"reason": "' + b"x" * MAX_BODY_BYTES + b'"}'
    status, answer = http("rotate", "POST", URL, ROUTE, body)
    assert status == 413 and str(MAX_BODY_BYTES) in answer["error"]
    assert app_world.issuer.calls == [] and app_world.store.calls == []


def test_a_declared_length_past_the_limit_is_413(app_world: World) -> None:
    req = func.HttpRequest(method="POST", url=URL, route_params=ROUTE, body=b"{}",
                           headers={"content-type": "application/json", "content-length": str(80 * 2**20)})
    resp: func.HttpResponse = function("rotate")(req)
    assert resp.status_code == 413 and "too large" in json.loads(resp.get_body())["error"]


def test_a_body_within_the_limit_is_parsed(app_world: World) -> None:
    status, _ = http("rotate", "POST", URL, ROUTE, {"dryRun": True, "reason": "x" * 150})
    assert status == 200


def test_roll_keys_is_bounded_too(app_world: World) -> None:
    status, _ = http("roll_keys", "POST", URL.replace("rotate", "roll-keys"), ROUTE, b" " * (MAX_BODY_BYTES + 1))
    assert status == 413
