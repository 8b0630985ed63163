"""Playwright for Python driving Debian's Chromium (Playwright's own browser download is not
reachable here). ``ensure_chromium`` installs the ``chromium`` package with apt-get when
``/usr/bin/chromium`` is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENS = Path(__file__).resolve().parents[2] / "docs" / "screens"


def ensure_chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    apt = shutil.which("apt-get")
    if apt is None:
        raise RuntimeError("chromium is missing and apt-get is not available to install it")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, apt, "update"], check=True, env=env, timeout=600)  # apt-get update first
    subprocess.run(
        [*sudo, apt, "install", "-y", "-o", "DPkg::Lock::Timeout=300", "chromium"],
        check=True,
        env=env,
        timeout=1200,
    )
    return CHROMIUM
