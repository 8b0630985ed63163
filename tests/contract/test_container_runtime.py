"""ContainerRuntime contract: start with env, describe, stop with a grace, nothing left over."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.local.container_runtime import SubprocessRuntime
from core.models import Egress
from core.ports import ContainerRuntime, ContainerSpec, ContainerStatus, RunState

if TYPE_CHECKING:
    from tests.contract.harness import RuntimeHarness

#: The test workload. SKYCRAWL_TEST_MODE: "sleep" (default: write <GUID>.env, sleep, write
#: <GUID>.sigterm and exit 0 on SIGTERM), "ignore" (the same, ignoring SIGTERM) or
#: "exit:<code>" (exit at once).
WORKLOAD = r"""
import json, os, signal, sys, time
cid, out = os.environ["SKYCRAWL_CONTAINER_ID"], os.environ["SKYCRAWL_TEST_OUT"]
mode = os.environ.get("SKYCRAWL_TEST_MODE", "sleep")
if mode.startswith("exit:"):
    sys.exit(int(mode[5:]))
def goodbye(*_):
    open(os.path.join(out, cid + ".sigterm"), "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "ignore" else goodbye)
env = {k: v for k, v in os.environ.items() if k.startswith("SKYCRAWL_")}
env["pid"] = str(os.getpid())
tmp = os.path.join(out, cid + ".tmp")
with open(tmp, "w") as f:
    f.write(json.dumps(env) + "\n")
os.replace(tmp, os.path.join(out, cid + ".env"))
while True:
    time.sleep(0.05)
"""


EU = Egress(name="eu-proxy")


def spec(
    h: RuntimeHarness,
    cid: str,
    mode: str = "sleep",
    proxy: str | None = None,
    egress: Egress = EU,
) -> ContainerSpec:
    env = {"SKYCRAWL_TEST_OUT": str(h.out_dir), "SKYCRAWL_TEST_MODE": mode, "SKYCRAWL_TEST_X": "1"}
    egress = egress.model_copy(update={"proxy_url": proxy})
    return ContainerSpec(container_id=cid, tenant_id="tenant-1", egress=egress, env=env)


async def started(
    h: RuntimeHarness, cid: str, mode: str = "sleep"
) -> tuple[ContainerRuntime, dict[str, str]]:
    runtime = h.runtime(WORKLOAD)
    await runtime.start_container(spec=spec(h, cid, mode, proxy="http://proxy.test:3128"))
    return runtime, json.loads(await h.wait_for_file(f"{cid}.env"))


async def until_exited(
    runtime: ContainerRuntime, cid: str, timeout_s: float = 10
) -> ContainerStatus:
    for _ in range(int(timeout_s / 0.05)):
        status = await runtime.describe(container_id=cid, egress=EU)
        if status.state is RunState.exited:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"{cid} still {status.state} after {timeout_s} s")


async def test_container_gets_its_identity_and_env(runtime_h: RuntimeHarness) -> None:
    _, env = await started(runtime_h, "c-env")
    assert env["SKYCRAWL_CONTAINER_ID"] == "c-env"
    assert env["SKYCRAWL_TENANT_ID"] == "tenant-1"
    assert env["SKYCRAWL_EGRESS_NAME"] == "eu-proxy"
    assert env["SKYCRAWL_PROXY_URL"] == "http://proxy.test:3128"
    assert env["SKYCRAWL_TEST_X"] == "1"


async def test_describe_running_then_stop_then_exited(runtime_h: RuntimeHarness) -> None:
    runtime, _ = await started(runtime_h, "c-stop")
    assert (await runtime.describe(container_id="c-stop", egress=EU)).state is RunState.running
    assert [s.container_id for s in await runtime.list_running(egress=EU)] == ["c-stop"]

    await runtime.stop_container(container_id="c-stop", egress=EU, grace_s=5)
    status = await until_exited(runtime, "c-stop")
    warned = (runtime_h.out_dir / "c-stop.sigterm").exists()
    if runtime.capabilities.graceful_stop:
        assert (status.exit_code, warned) == (0, True)  # it handled SIGTERM, exited cleanly
    else:  # a kill without warning (ACI): the capability tells the core to drain first
        assert (status.exit_code, warned) == (137, False)
    assert await runtime.list_running(egress=EU) == []
    await runtime.stop_container(container_id="c-stop", egress=EU)  # a gone one: a no-op


async def test_stop_forces_a_container_that_ignores_sigterm(runtime_h: RuntimeHarness) -> None:
    runtime, _ = await started(runtime_h, "c-stubborn", mode="ignore")
    begun = time.monotonic()
    await runtime.stop_container(container_id="c-stubborn", egress=EU, grace_s=0.3)
    status = await until_exited(runtime, "c-stubborn")
    elapsed = time.monotonic() - begun
    assert elapsed < 5
    if runtime.capabilities.graceful_stop:
        assert elapsed >= 0.3  # it was given its grace before the kill
    assert status.exit_code not in (None, 0)


async def test_a_container_that_exits_reports_its_code(runtime_h: RuntimeHarness) -> None:
    runtime = runtime_h.runtime(WORKLOAD)
    await runtime.start_container(spec=spec(runtime_h, "c-exit", mode="exit:3"))
    status = await until_exited(runtime, "c-exit")
    assert status.exit_code == 3


async def test_unknown_container(runtime_h: RuntimeHarness) -> None:
    runtime = runtime_h.runtime(WORKLOAD)
    assert (
        await runtime.describe(container_id="never-started", egress=EU)
    ).state is RunState.unknown
    await runtime.stop_container(container_id="never-started", egress=EU)


async def test_each_egress_lists_only_its_own_containers(runtime_h: RuntimeHarness) -> None:
    """Two egresses on one backend (one cluster, one resource group, one job): each call
    names its egress, and listing one egress never shows the other's containers."""
    west = Egress(name="west", region="west-1")
    runtime = runtime_h.runtime(WORKLOAD)
    await runtime.start_container(spec=spec(runtime_h, "c-eu"))
    await runtime.start_container(spec=spec(runtime_h, "c-west", egress=west))
    await runtime_h.wait_for_file("c-eu.env")
    await runtime_h.wait_for_file("c-west.env")
    for _ in range(100):  # a runtime may report pending for a moment after the start
        eu_ids = [s.container_id for s in await runtime.list_running(egress=EU)]
        west_ids = [s.container_id for s in await runtime.list_running(egress=west)]
        if eu_ids and west_ids:
            break
        await asyncio.sleep(0.05)
    assert (eu_ids, west_ids) == (["c-eu"], ["c-west"])
    await runtime.stop_container(container_id="c-west", egress=west, grace_s=1)
    assert (await until_exited_on(runtime, "c-west", west)).state is RunState.exited
    assert [s.container_id for s in await runtime.list_running(egress=EU)] == ["c-eu"]
    assert await runtime.list_running(egress=west) == []


async def until_exited_on(
    runtime: ContainerRuntime, cid: str, egress: Egress, timeout_s: float = 10
) -> ContainerStatus:
    for _ in range(int(timeout_s / 0.05)):
        status = await runtime.describe(container_id=cid, egress=egress)
        if status.state is RunState.exited:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"{cid} still {status.state} after {timeout_s} s")


# --------------------------------------------------------------------------- subprocess only


def gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return state in ("Z", "X")


async def wait_gone(pid: int, timeout_s: float = 5) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if gone(pid):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"process {pid} still alive after {timeout_s} s")


async def test_subprocess_close_stops_everything(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    runtime = SubprocessRuntime(
        command=(sys.executable, "-c", WORKLOAD), log_dir=tmp_path / "logs", close_grace_s=0.3
    )
    env = {"SKYCRAWL_TEST_OUT": str(out)}
    pids = []
    for cid, mode in [("c-1", "sleep"), ("c-2", "ignore")]:
        spec_ = ContainerSpec(
            cid, "t", Egress(name="local"), env={**env, "SKYCRAWL_TEST_MODE": mode}
        )
        await runtime.start_container(spec=spec_)
        await runtime.start_container(spec=spec_)  # still running: a no-op
        assert (tmp_path / "logs" / f"{cid}.pid").exists()
    for cid in ("c-1", "c-2"):
        for _ in range(200):
            if (out / f"{cid}.env").exists():
                break
            await asyncio.sleep(0.02)
        pids.append(int(json.loads((out / f"{cid}.env").read_text())["pid"]))
    assert len(await runtime.list_running(egress=Egress(name="local"))) == 2
    await runtime.close()
    for pid in pids:
        await wait_gone(pid, 1)
    assert list((tmp_path / "logs").glob("*.pid")) == []


PARENT = r"""
import asyncio, sys
from pathlib import Path
from adapters.local.container_runtime import SubprocessRuntime
from core.models import Egress
from core.ports import ContainerSpec

CHILD = "import signal, time\n" + sys.argv[2] + "\nwhile True: time.sleep(0.05)"

async def main() -> None:
    runtime = SubprocessRuntime(
        command=(sys.executable, "-c", CHILD), log_dir=Path(sys.argv[1]), close_grace_s=0.3
    )
    await runtime.start_container(spec=ContainerSpec("child", "t", Egress(name="local")))
    print("started", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def child_of_parent(
    tmp_path: Path, child_setup: str
) -> tuple[asyncio.subprocess.Process, int]:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, str(tmp_path), child_setup, stdout=asyncio.subprocess.PIPE
    )
    assert parent.stdout is not None
    assert (await asyncio.wait_for(parent.stdout.readline(), 20)).strip() == b"started"
    child = int(json.loads((tmp_path / "child.pid").read_text())["pid"])
    await asyncio.sleep(0.2)  # let the child get going
    assert not gone(child)
    return parent, child


async def test_subprocess_kill_9_of_the_parent_leaves_no_orphan(tmp_path: Path) -> None:
    parent, child = await child_of_parent(tmp_path, "")
    parent.send_signal(signal.SIGKILL)
    await parent.wait()
    await wait_gone(child)


async def test_subprocess_ctrl_c_of_the_parent_leaves_no_child(tmp_path: Path) -> None:
    # The child ignores SIGTERM, so only the parent's exit hook (SIGKILL after grace) ends it.
    parent, child = await child_of_parent(tmp_path, "signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    parent.send_signal(signal.SIGINT)
    await asyncio.wait_for(parent.wait(), 10)
    await wait_gone(child, 2)
