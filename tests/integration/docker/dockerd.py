"""A real Docker Engine for the tests: Debian's ``docker.io``, started on demand.

``docker_host()`` returns ``unix:///run/skycrawl-test-docker/docker.sock``: if a daemon
already answers there it is used as it is (and left running); otherwise ``dockerd`` is
installed with apt-get when missing and started with ``--bridge=none`` (no bridge, no
iptables: containers run ``--network host`` and only ever see this machine's loopback), its
own socket, exec root and data root. The data root is outside the work tree on purpose
(``/var/lib/skycrawl-test-docker``): images built there by one checkout are found by the next
one on the same machine (see ``engine_image``). A daemon started here runs in its own process
group, is asked to die with this process, and is stopped by ``stop()`` (session fixture, and
at interpreter exit).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

RUN_DIR = Path("/run/skycrawl-test-docker")
DATA_ROOT = Path("/var/lib/skycrawl-test-docker")
SOCKET = RUN_DIR / "docker.sock"
HOST = f"unix://{SOCKET}"
LOG = Path(tempfile.gettempdir()) / "skycrawl-dockerd.log"
START_TIMEOUT_S = 60.0

_lock = threading.Lock()
_started: subprocess.Popen[bytes] | None = None


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _answers() -> bool:
    if not SOCKET.exists():
        return False
    client = docker.DockerClient(base_url=HOST, timeout=5)
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return False
    finally:
        client.close()


def _apt_install(*packages: str) -> None:
    apt = shutil.which("apt-get")
    if apt is None:
        raise RuntimeError(f"{' '.join(packages)} missing and apt-get is not available")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, apt, "update"], check=True, env=env, timeout=600)
    subprocess.run(
        [*sudo, apt, "install", "-y", "-o", "DPkg::Lock::Timeout=300", *packages],
        check=True,
        env=env,
        timeout=1200,
    )


def ensure_packages(binary: str, package: str) -> str:
    """The path of ``binary``, installing Debian's ``package`` first if it is missing."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin")
    if found is None:
        _apt_install(package)
        found = shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin")
    if found is None:
        raise RuntimeError(f"{package} installed but {binary} not found")
    return found


def docker_host() -> str:
    """The daemon's URL, starting one if none answers."""
    global _started
    with _lock:
        if _answers():
            return HOST
        dockerd = ensure_packages("dockerd", "docker.io")
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        DATA_ROOT.mkdir(parents=True, exist_ok=True)
        if _previous_daemon_answers():
            return HOST
        with LOG.open("ab") as log:
            _started = subprocess.Popen(
                [
                    dockerd,
                    "--bridge=none",
                    "--iptables=false",
                    "--ip6tables=false",
                    "--ip-masq=false",
                    f"--data-root={DATA_ROOT}",
                    f"--exec-root={RUN_DIR / 'exec'}",
                    f"--pidfile={RUN_DIR / 'dockerd.pid'}",
                    f"--host={HOST}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if _started.poll() is not None:
                raise RuntimeError(f"dockerd exited with {_started.returncode}; see {LOG}")
            if _answers():
                return HOST
            time.sleep(0.2)
        raise RuntimeError(f"dockerd did not answer within {START_TIMEOUT_S} s; see {LOG}")


def _previous_daemon_answers() -> bool:
    """A daemon an earlier (killed) test run started may still be shutting down: it holds the
    pid file, so a new one would refuse to start. Wait for it to answer or to go; a pid file
    whose process is gone is removed."""
    pidfile = RUN_DIR / "dockerd.pid"
    try:
        pid = int(pidfile.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return False
    deadline = time.monotonic() + START_TIMEOUT_S
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        except PermissionError:
            pass  # alive, another user's
        if _answers():
            return True
        time.sleep(0.5)
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()
    return False


def client() -> docker.DockerClient:
    """A client of the test daemon (started if needed); the caller closes it."""
    return docker.DockerClient(base_url=docker_host(), timeout=120)


def stop() -> None:
    """Stop the daemon if this process started it (its containers are killed with it)."""
    global _started
    with _lock:
        process, _started = _started, None
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


atexit.register(stop)
