"""Drive the indexed functions the way the Python worker does: its converters, its request objects."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from typing import Any

import azure.functions as func
import pytest
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter

from rotation import bootstrap
from rotation.settings import Settings
from tests.service.conftest import World


@functools.cache
def indexed() -> dict[str, Any]:
    """The worker indexes once per process (a second get_functions() call refuses the same names)."""
    import function_app

    return {str(fn.get_function_name()): fn for fn in function_app.app.get_functions()}


def function(name: str) -> Callable[..., Any]:
    return indexed()[name].get_user_function()  # type: ignore[no-any-return]


def deliver(payload: dict[str, Any]) -> None:
    """What the worker does with one element of an Event Grid delivery."""
    event = EventGridEventInConverter.decode(meta.Datum(type="json", value=json.dumps(payload)),
                                             trigger_metadata=None)
    function("on_gateway_token_event")(event)


def http(name: str, method: str, url: str, route: dict[str, str] | None = None,
         body: bytes | dict[str, Any] = b"") -> tuple[int, Any]:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    req = func.HttpRequest(method=method, url=url, route_params=route or {}, body=raw,
                           headers={"content-type": "application/json"})
    resp: func.HttpResponse = function(name)(req)
    return resp.status_code, json.loads(resp.get_body())


@pytest.fixture
def app_world() -> Iterator[World]:
    world = World()
    settings = Settings(registry=world.registry, key_vault_url="https://kv.example", deadline_seconds=5)
    with bootstrap.using(world.rotator, settings):
        yield world
