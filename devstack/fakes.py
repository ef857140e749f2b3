"""Runs the fake Azure endpoints (managed identity, ARM, Key Vault, Event Grid topic) in one process.

In-process (tests):

    fakes = start(tmp_path, {"arm": {"gateways": [GATEWAY_ID]}})
    ... fakes.identity / fakes.arm / fakes.keyvault / fakes.env() / fakes.info() ...
    fakes.stop()

Foreground process (the stack orchestrator spawns it detached):

    python -m devstack.fakes --dir D [--config C.json]

It writes `D/fakes.json` once every server listens (atomically, so a reader never sees half a file)
and removes it on SIGTERM/SIGINT. Format:

    {"pid": 1234, "ca": "D/ca.pem",
     "identity": {"url": "http://127.0.0.1:P1", "endpoint": "http://127.0.0.1:P1/msi/token",
                  "header": "<IDENTITY_HEADER>"},
     "arm": {"url": "https://127.0.0.1:P2"},
     "keyvault": {"url": "https://127.0.0.1:P3", "tenant": "<tenant id>"},
     "eventgrid": {"url": "https://127.0.0.1:P4", "endpoint": "https://127.0.0.1:P4/api/events"},
     "env": {"IDENTITY_ENDPOINT": …, "IDENTITY_HEADER": …, "REQUESTS_CA_BUNDLE": "D/ca.pem"}}

Config (every key optional):

    {"identity": {"header": "<secret>", "tokens": {"<resource>": "<token>"}, "port": 0,
                  "lifetimeSeconds": 3600},
     "arm": {"gateways": ["<full ARM gateway id>", …], "port": 0},
     "keyvault": {"tenant": "<guid>", "port": 0},
     "eventgrid": {"port": 0}}

The CA in `D` (`ca.pem` + `ca-key.pem`) is reused when present, else created.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack import arm as arm_fake
from devstack import eventgrid as eg_fake
from devstack import keyvault as kv_fake
from devstack.arm import ArmFake
from devstack.eventgrid import EventGridFake
from devstack.identity import IdentityFake
from devstack.keyvault import DEFAULT_TENANT, KeyVaultFake
from devstack.tls import DevCA

FAKES_JSON = "fakes.json"


@dataclass
class Fakes:
    dir: Path
    ca: DevCA
    identity: IdentityFake
    arm: ArmFake
    keyvault: KeyVaultFake
    eventgrid: EventGridFake

    @property
    def ca_path(self) -> str:
        return self.ca.ca_path

    def env(self) -> dict[str, str]:
        """What a process needs to use these fakes through the real SDKs."""
        return {**self.identity.env(), "REQUESTS_CA_BUNDLE": self.ca_path}

    def info(self) -> dict[str, Any]:
        """The content of `fakes.json`."""
        return {
            "pid": os.getpid(),
            "ca": self.ca_path,
            "identity": {"url": self.identity.url, "endpoint": self.identity.endpoint,
                         "header": self.identity.header},
            "arm": {"url": self.arm.url},
            "keyvault": {"url": self.keyvault.url, "tenant": self.keyvault.tenant},
            "eventgrid": {"url": self.eventgrid.url, "endpoint": self.eventgrid.endpoint},
            "env": self.env(),
        }

    def write_info(self) -> Path:
        path = self.dir / FAKES_JSON
        tmp = path.with_name(FAKES_JSON + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds IDENTITY_HEADER
        with os.fdopen(fd, "w") as f:
            json.dump(self.info(), f, indent=2)
        os.replace(tmp, path)
        return path

    def stop(self) -> None:
        for server in (self.eventgrid, self.keyvault, self.arm, self.identity):
            with contextlib.suppress(Exception):
                server.stop()

    def __enter__(self) -> Fakes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = config.get(name) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"config.{name} must be an object")
    return value


def start(directory: str | os.PathLike[str], config: Mapping[str, Any] | None = None) -> Fakes:
    """Starts identity + ARM + Key Vault + Event Grid on loopback (threads of this process); returns once listening."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    config = config or {}
    ident_cfg, arm_cfg, kv_cfg, eg_cfg = (_section(config, n)
                                          for n in ("identity", "arm", "keyvault", "eventgrid"))
    ca = DevCA.load_or_create(d)
    identity = IdentityFake(header=ident_cfg.get("header"), tokens=ident_cfg.get("tokens") or {},
                            lifetime_seconds=int(ident_cfg.get("lifetimeSeconds", 3600)),
                            port=int(ident_cfg.get("port", 0)))
    arm = ArmFake(ca.server_context(d, "arm-server"), authorize=arm_fake.identity_authorizer(identity),
                  port=int(arm_cfg.get("port", 0)), gateways=list(arm_cfg.get("gateways") or []))
    keyvault = KeyVaultFake(ca.server_context(d, "keyvault-server"),
                            authorize=kv_fake.identity_authorizer(identity),
                            tenant=str(kv_cfg.get("tenant") or DEFAULT_TENANT), port=int(kv_cfg.get("port", 0)))
    eventgrid = EventGridFake(ca.server_context(d, "eventgrid-server"),
                              authorize=eg_fake.identity_authorizer(identity), port=int(eg_cfg.get("port", 0)))
    fakes = Fakes(d, ca, identity, arm, keyvault, eventgrid)
    try:
        for server in (identity, arm, keyvault, eventgrid):
            server.start()
    except Exception:
        fakes.stop()
        raise
    return fakes


def serve(directory: str | os.PathLike[str], config: Mapping[str, Any] | None = None) -> None:
    """Runs the fakes in the foreground until SIGTERM/SIGINT; `dir/fakes.json` exists while serving."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fakes = start(directory, config)
    path = fakes.write_info()
    shown = {k: v for k, v in fakes.info().items() if k != "env"}
    shown["identity"] = {k: v for k, v in shown["identity"].items() if k != "header"}
    print(json.dumps(shown), flush=True)
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        fakes.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.fakes",
                                     description="Fake Azure endpoints (identity, ARM, Key Vault) for the devstack")
    parser.add_argument("--dir", required=True, help="state directory: ca.pem, server certs, fakes.json")
    parser.add_argument("--config", help="JSON config file (see the module docstring)")
    args = parser.parse_args(argv)
    raw: object = {}
    if args.config:
        with open(args.config) as f:
            raw = json.load(f)
    if not isinstance(raw, dict):
        print("config must be a JSON object", file=sys.stderr)
        return 2
    serve(args.dir, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
