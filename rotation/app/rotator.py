"""The facade every entry point (triggers, CLI, replay) drives: one object holding the ports and
settings, each method delegating to the module that does the job."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from rotation.app.context import Clock, Deps
from rotation.app.keyroll import KeyRoll
from rotation.app.reconcile import Reconcile, Request, reconcile_safely
from rotation.app.status import status
from rotation.app.sweep import SWEEP_BUDGET_SECONDS, Sweep
from rotation.core.errors import UnknownGateway
from rotation.core.model import GatewayConfig, KeyType, Registry, RotationReport, TokenInfo
from rotation.core.ports import Clusters, Lease, OutcomePublisher, TokenIssuer, TokenStore
from rotation.core.redact import clean_reason
from rotation.core.restarts import Heal
from rotation.core.status import GatewayStatus, KeyRollReport, SweepReport


@dataclass
class Rotator:
    registry: Registry
    issuer: TokenIssuer
    store: TokenStore
    clusters: Clusters
    clock: Clock
    lease: Lease  # the composition root's choice: Blob Storage in Azure, in-process for local runs
    token_lifetime: timedelta = timedelta(days=29)
    renew_before: timedelta = timedelta(days=7)
    publisher: OutcomePublisher | None = None
    sweep_concurrency: int = 8
    sweep_budget_seconds: float = SWEEP_BUDGET_SECONDS
    adopt_existing: bool = False  # Key Vault's first token: the one targets run (rotation.app.adoption)

    @property
    def deps(self) -> Deps:
        return Deps(self.registry, self.issuer, self.store, self.clusters, self.clock, self.token_lifetime,
                    self.renew_before, self.publisher, self.adopt_existing)

    def gateway(self, service: str, gateway: str) -> GatewayConfig:
        config = self.registry.find(service, gateway)
        if config is None:
            raise UnknownGateway(f"gateway {service}/{gateway} is not in the registry")
        return config

    @property
    def lease_shared(self) -> bool:
        return self.lease.shared

    def reconcile(self, config: GatewayConfig, *, reason: str, deadline_seconds: float,
                  force: bool = False, dry_run: bool = False, known: TokenInfo | None = None,
                  heal: Heal | None = None) -> RotationReport:
        """Bring every target of one gateway to the Key Vault token, renewing it first if due, under the
        gateway's lease (see `rotation.app.reconcile`).

        If targets kept a later-expiring Key Vault version (racing rotations), that version is made
        the latest and a second pass brings the others up to it. While a key roll is pending (Key
        Vault's latest carries `keyRollFrom`), every new token is signed by the key rolled to and
        carries the roll forward; tokens of the retiring key are replaced even if they expire later.
        With `heal` (events), workloads of in-sync targets whose pods predate the token are restarted.

        Raises a RotationError when the lease, Key Vault or ARM fail (nothing reached a cluster);
        target failures are reported per target instead.
        """
        # The reason is free text from an operator: never log or publish a pasted secret.
        request = Request(clean_reason(reason), force=force, dry_run=dry_run, known=known, heal=heal)
        return Reconcile.taking(self.lease, self.deps, config, request, deadline_seconds).run()

    def reconcile_safely(self, config: GatewayConfig, *, reason: str, deadline_seconds: float,
                         force: bool = False, dry_run: bool = False, known: TokenInfo | None = None,
                         heal: Heal | None = None) -> RotationReport:
        """reconcile(), with a failure before the targets (or a bug) turned into a report, not raised."""
        request = Request(clean_reason(reason), force=force, dry_run=dry_run, known=known, heal=heal)
        return reconcile_safely(self.deps, self.lease, config, request, deadline_seconds)

    def roll_keys(self, config: GatewayConfig, *, from_key: KeyType, deadline_seconds: float,
                  rollout_wait_seconds: float = 60.0, dry_run: bool = False, poll_seconds: float = 1.0,
                  confirm_restarted: bool = False) -> KeyRollReport:
        """See `rotation.app.keyroll.KeyRoll`."""
        return KeyRoll(self.deps, self.lease).run(
            config, from_key=from_key, deadline_seconds=deadline_seconds, rollout_wait_seconds=rollout_wait_seconds,
            dry_run=dry_run, poll_seconds=poll_seconds, confirm_restarted=confirm_restarted)

    def sweep(self, *, deadline_seconds: float, dry_run: bool = False,
              progress: Callable[[RotationReport], None] | None = None,
              budget_seconds: float | None = None) -> SweepReport:
        """See `rotation.app.sweep.Sweep`."""
        budget = self.sweep_budget_seconds if budget_seconds is None else budget_seconds
        return Sweep(self.deps, self.lease, self.sweep_concurrency).run(
            deadline_seconds=deadline_seconds, budget_seconds=budget, dry_run=dry_run, progress=progress)

    def status(self, configs: Sequence[GatewayConfig] | None = None, *, timeout: float = 20.0,
               ) -> list[GatewayStatus]:
        """See `rotation.app.status.status`."""
        chosen = list(self.registry.gateways if configs is None else configs)
        return status(self.deps, chosen, timeout=timeout, lease=self.lease)
