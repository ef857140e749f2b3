"""The application layer: one reconcile's steps over the ports (`rotation.core.ports`), each module one job.

`rotator.Rotator` is the facade the entry points use; `reconcile` runs gather → plan → act → promote
for one gateway; `targets` syncs one target; `keyroll`, `adoption`, `sweep` and `status` build on them.
Nothing here imports an SDK or an adapter: the composition root (`rotation.bootstrap`) picks them.
"""
