"""`python -m devstack up --dir D` on a directory that held a stack before: after `down`, after its
processes were killed, after an `up` killed while starting, with and without `--azurite`.

A stack leaves state behind on purpose (CA, certificates, Azurite's workspace, logs) and pid files when
it did not get to stop. Two external behaviours make that state matter:

- Azurite keeps its blob data in the `--location` workspace across restarts (Azurite 3.35.0 README,
  "Workspace Path Configuration", "Workspace Structure"), and Create Container fails with 409
  `ContainerAlreadyExists` when the container exists (Blob service REST reference, "Create Container";
  azure-storage-blob raises `ResourceExistsError`).
  Reopening an earlier stack's workspace therefore broke `up --azurite` the second time.
- After a crash or a reboot a recorded pid may belong to another process: Linux reuses pids, and
  `/proc/PID/cmdline` holds the argv of whatever runs under that pid now (proc_pid_cmdline(5)). A stale
  stack is stopped by the pids it recorded, and only when that argv is still the one it started.

Each `up` starts etcd and two kube-apiservers, so these tests cost a few seconds each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devstack import azurite, kube
from devstack import stack as devstack

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.devstack


def _need(found: object, what: str) -> None:
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is not installed (CI=true, so this fails)")
        pytest.skip(f"{what} is not installed (make setup)")


@pytest.fixture(params=[False, True], ids=["plain", "azurite"])
def with_azurite(request: pytest.FixtureRequest) -> bool:
    _need(kube.find_binaries(), "kube-apiserver")
    if request.param:
        _need(azurite.find_binary(), "azurite")
    return bool(request.param)


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "stack"
    try:
        yield d
    finally:
        devstack.down(d)


def _devstack(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devstack", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _up(d: Path, with_azurite: bool) -> None:
    run = _devstack("up", "--dir", str(d), *(["--azurite"] if with_azurite else []))
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]


def _recorded(d: Path) -> dict[str, int]:
    """Every pid the stack in `d` recorded: the fakes, the controller, Azurite, etcd, the apiservers."""
    files = [*d.glob("*.pid"), *(d / "pids").glob("*.pid")]
    return {f.stem: int(f.read_text().split()[0]) for f in files}


def _alive(pid: int) -> bool:
    """Runs and is not a zombie (a killed process whose parent has not reaped it yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _gone(pids: dict[str, int], timeout: float = 15) -> list[str]:
    end = time.monotonic() + timeout
    while time.monotonic() < end and any(_alive(p) for p in pids.values()):
        time.sleep(0.1)
    return [name for name, pid in pids.items() if _alive(pid)]


def _container(url: str, ca: str) -> Any:
    from azure.core.credentials import AccessToken
    from azure.storage.blob import ContainerClient

    class _Storage:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken(azurite.storage_token(), int(time.time()) + 3600)

    return ContainerClient.from_container_url(url, credential=_Storage(), connection_verify=ca)


def _leave_a_dead_letter(d: Path) -> None:
    """What an earlier stack's users leave in Azurite: a dead-lettered event (and its container)."""
    running = devstack.Stack.load(d)
    with _container(running.settings["DEADLETTER_BLOB_URL"], running.ca) as container:
        container.upload_blob("2026/01/01/old.json", b"[]")


def _assert_serves(d: Path, with_azurite: bool) -> None:
    """The stack in `d` answers: ARM signs, both clusters hold the seeded Secrets, Azurite (if asked for)
    has both containers and nothing an earlier stack left in them."""
    from kubernetes import client

    running = devstack.Stack.load(d)
    assert running.verify("gw-east", running.sign("gw-east", datetime.now(UTC) + timedelta(days=1)))["valid"]
    for cluster, namespace, secret in (("east", "apim", "gw-east-token"), ("west", "gateways", "gw-west-token")):
        api = running.admin(cluster)
        try:
            assert client.CoreV1Api(api).read_namespaced_secret(secret, namespace).data
        finally:
            api.close()
    assert ("LEASE_CONTAINER_URL" in running.settings) == with_azurite
    assert ("DEADLETTER_BLOB_URL" in running.settings) == with_azurite
    if with_azurite:
        for name in ("LEASE_CONTAINER_URL", "DEADLETTER_BLOB_URL"):
            with _container(running.settings[name], running.ca) as container:
                assert container.exists()
                assert [b.name for b in container.list_blobs()] == []


def test_up_again_after_down_with_and_without_azurite(directory: Path, with_azurite: bool) -> None:
    _need(azurite.find_binary(), "azurite")
    _up(directory, with_azurite=True)  # the first stack always had Azurite: its workspace stays behind
    _leave_a_dead_letter(directory)
    first = _recorded(directory)
    assert _devstack("down", "--dir", str(directory)).returncode == 0
    assert _gone(first) == []

    _up(directory, with_azurite)
    _assert_serves(directory, with_azurite)


def test_up_after_its_processes_were_killed(directory: Path, with_azurite: bool) -> None:
    """A crash or a reboot: every process of the stack is gone (SIGKILL, no clean-up), its files stay."""
    _up(directory, with_azurite)
    if with_azurite:
        _leave_a_dead_letter(directory)
    first = _recorded(directory)
    assert {"fakes", "controller", "etcd", "apiserver-east", "apiserver-west"} <= set(first)
    for pid in first.values():
        os.killpg(pid, signal.SIGKILL)  # each runs in its own session: the group is just its tree
    assert _gone(first) == []
    assert (directory / "stack.json").exists()

    _up(directory, with_azurite)
    _assert_serves(directory, with_azurite)


def test_up_after_an_up_killed_while_starting(directory: Path) -> None:
    """`up` killed before it wrote stack.json (Ctrl-C in a terminal that then died, OOM kill): its etcd and
    apiservers keep running. The next `up` stops them by their recorded pids and starts afresh."""
    _need(kube.find_binaries(), "kube-apiserver")
    starting = subprocess.Popen([sys.executable, "-m", "devstack", "up", "--dir", str(directory)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 120
        while not (directory / "pids" / "apiserver-west.pid").exists() and time.monotonic() < end:
            assert starting.poll() is None, "up ended before its apiservers started"
            time.sleep(0.02)
    finally:
        starting.kill()
        starting.wait()
    stale = _recorded(directory)
    assert {"fakes", "etcd", "apiserver-west"} <= set(stale)
    assert [name for name, pid in stale.items() if _alive(pid)], "nothing of the killed up was left running"

    _up(directory, with_azurite=False)
    assert _gone(stale, timeout=1) == []
    _assert_serves(directory, with_azurite=False)


def test_a_recycled_pid_is_never_signalled(tmp_path: Path) -> None:
    """After a reboot the pids a stack recorded may belong to anything, even to another stack's etcd or
    fakes (same program, other directory). `down` (which `up` runs first) leaves such processes alone and
    drops the stale pid files."""
    other = tmp_path / "other-stack"
    impostors = [
        # argv[0] `etcd`, with another stack's data dir: what a name-only check would take for ours.
        subprocess.Popen(["etcd", "-c", "import time; time.sleep(120)", f"--data-dir={other}/kube/etcd"],
                         executable=sys.executable, start_new_session=True),
        # another stack's fakes / controller / Azurite lookalike: same modules, other directory.
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "-m", "devstack.fakes",
                          "devstack.controller", "--dir", str(other), "--location", str(other / "azurite" / "data")],
                         start_new_session=True),
    ]
    try:
        d = tmp_path / "stack"
        (d / "pids").mkdir(parents=True)
        etcd_like, python_like = (p.pid for p in impostors)
        for name in ("etcd", "apiserver-east"):
            (d / "pids" / f"{name}.pid").write_text(f"{etcd_like}\n")
        for name in ("fakes", "controller", "azurite"):
            (d / f"{name}.pid").write_text(f"{python_like}\n")
        (d / "stack.json").write_text(json.dumps({"clusters": []}))

        devstack.down(d)

        time.sleep(0.3)
        assert [_alive(p.pid) for p in impostors] == [True, True], "a process that is not the stack's was signalled"
        assert _recorded(d) == {}
        assert not (d / "stack.json").exists()
    finally:
        for p in impostors:
            p.kill()
            p.wait()
