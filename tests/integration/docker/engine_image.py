"""The engine image for the Docker tests, built here without any registry.

``engine_image(client, extra_packages)`` returns the tag of ``engine_container/Dockerfile``
built on:

* **a Debian base** made with ``debootstrap --variant=minbase`` (bookworm, with python3,
  python3-venv and ca-certificates, from the machine's own Debian mirror) and loaded with
  ``docker import`` as ``skycrawl-test-base:bookworm-<hash of the recipe>``. The root file
  system's tar is cached in ``.cache/docker/``; the imported image lives in the test daemon's
  data root, outside the work tree, so another checkout on the same machine reuses it;
* **a wheelhouse** built on the host with ``pip wheel`` (``.cache/docker/wheels-<hash>``)
  from ``engine_container/requirements.txt`` plus ``extra_packages``, for the base image's
  Python (``Requires-Python`` of every wheel is checked against it), installed with
  ``--no-index``: the build itself needs no network.

The result is tagged ``skycrawl-engine:test-<hash>``, the hash covering everything the image
is made of (base recipe, Dockerfile, requirements, extra packages and every file of
``core/``, ``adapters/`` and ``engine_container/``): a clean clone of the same commit on the
same machine finds the image already in the daemon and builds nothing, and a changed source
file builds a new tag on the cached base and wheel layers (a few seconds). The three newest
test tags are kept, older ones removed.
"""

from __future__ import annotations

import email.parser
import hashlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import docker
import docker.errors
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[3]
CACHE = REPO / ".cache" / "docker"
DOCKERFILE = "engine_container/Dockerfile"
REQUIREMENTS = "engine_container/requirements.txt"
SOURCES = ("core", "adapters", "engine_container")
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_REPO = "skycrawl-test-base"
ENGINE_REPO = "skycrawl-engine"
KEEP_TAGS = 3

_lock = threading.Lock()


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def _has_image(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def debian_mirror() -> str:
    """The first Debian mirror apt uses here (deb822 or one-line sources)."""
    for path in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]:
        if not path.exists():
            continue
        text = path.read_text()
        match = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or re.search(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s", text, re.M
        )
        if match:
            return match.group(1)
    return "http://deb.debian.org/debian"


def base_image(client: docker.DockerClient) -> str:
    recipe = f"{SUITE} minbase {','.join(BASE_PACKAGES)}".encode()
    key = _digest(recipe)[:12]
    tag = f"{BASE_REPO}:{SUITE}-{key}"
    if _has_image(client, tag):
        return tag
    CACHE.mkdir(parents=True, exist_ok=True)
    tar = CACHE / f"debian-{SUITE}-{key}.tar"
    if not tar.exists():
        from tests.integration.docker.dockerd import ensure_packages

        debootstrap = ensure_packages("debootstrap", "debootstrap")
        root = CACHE / f"rootfs-{key}"
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(root),
                debian_mirror(),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=1800,
        )
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc"):
            shutil.rmtree(root / junk, ignore_errors=True)
        partial = tar.with_suffix(".partial")
        subprocess.run(
            ["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], check=True
        )
        partial.replace(tar)
        shutil.rmtree(root, ignore_errors=True)
    repository, _, version = tag.partition(":")
    client.api.import_image_from_file(str(tar), repository=repository, tag=version)
    return tag


def _source_files() -> Iterator[Path]:
    yield REPO / DOCKERFILE
    for top in SOURCES:
        for path in sorted((REPO / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                yield path


def base_python(client: docker.DockerClient, base: str) -> str:
    """The Python version of ``base`` (bookworm's 3.11.2), asked from the image itself."""
    out = client.containers.run(
        base,
        ["python3", "-c", "import platform; print(platform.python_version())"],
        remove=True,
        network_mode="none",
    )
    return bytes(out).decode().strip()


def _requires_python(wheel: Path) -> str | None:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.HeaderParser().parsestr(archive.read(name).decode())
    return metadata.get("Requires-Python")


def wheelhouse(extra_packages: Sequence[str], python: str) -> Path:
    """Wheels of the requirements for the image's ``python``. ``pip wheel`` runs on the
    host's interpreter (and ``pip download --python-version`` cannot build the sdist-only
    dependencies), so a wheel whose ``Requires-Python`` excludes the image's version (e.g.
    a soupsieve that wants >= 3.11.5 on bookworm's 3.11.2) is pinned to its newest release
    for that version and the resolution run again."""
    requirements = (REPO / REQUIREMENTS).read_bytes()
    key = _digest(requirements, "\n".join(extra_packages).encode(), python.encode())[:12]
    target = CACHE / f"wheels-{key}"
    if target.exists():
        return target
    partial = CACHE / f"wheels-{key}.partial"
    constraints = CACHE / f"wheels-{key}.constraints"
    pins: list[str] = []
    for _ in range(10):
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        constraints.write_text("".join(f"{pin}\n" for pin in pins))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--wheel-dir",
                str(partial),
                "--constraint",
                str(constraints),
                "-r",
                str(REPO / REQUIREMENTS),
                *extra_packages,
            ],
            check=True,
            timeout=1200,
        )
        too_new = []
        for wheel in partial.glob("*.whl"):
            spec = _requires_python(wheel)
            if spec and python not in SpecifierSet(spec):
                name, version = wheel.name.split("-")[:2]
                too_new.append(_newest_for(name.replace("_", "-"), version, python))
        if not too_new:
            break
        pins += too_new
    else:
        raise RuntimeError(f"no wheels for Python {python} within ten resolutions: {pins}")
    constraints.unlink()
    partial.replace(target)
    return target


def _newest_for(name: str, rejected: str, python: str) -> str:
    """A constraint on ``name`` to its newest release that admits ``python``, as pip picks it
    for that interpreter (many releases in a row may want a newer one: soupsieve 3.0 to
    4.1.4 all want >= 3.11.5); ``name<rejected`` if pip finds none."""
    with tempfile.TemporaryDirectory() as scratch:
        found = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                python,
                "--dest",
                scratch,
                f"{name}<{rejected}",
            ],
            capture_output=True,
            timeout=300,
        )
        wheels = list(Path(scratch).glob("*.whl"))
        if found.returncode == 0 and len(wheels) == 1:
            return f"{name}=={wheels[0].name.split('-')[1]}"
    return f"{name}<{rejected}"


def _context(wheels: Path) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(REPO / REQUIREMENTS, arcname=REQUIREMENTS)
        for path in _source_files():
            tar.add(path, arcname=str(path.relative_to(REPO)))
        for wheel in sorted(wheels.iterdir()):
            tar.add(wheel, arcname=f"wheels/{wheel.name}")
    buffer.seek(0)
    return buffer


def engine_image(client: docker.DockerClient, extra_packages: Sequence[str] = ()) -> str:
    """The tag of the engine image with ``extra_packages``, built only if not there yet."""
    with _lock:
        base = base_image(client)
        parts = [base.encode(), "\n".join(extra_packages).encode()]
        parts += [
            str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() for p in _source_files()
        ]
        parts.append((REPO / REQUIREMENTS).read_bytes())
        tag = f"{ENGINE_REPO}:test-{_digest(*parts)[:16]}"
        if _has_image(client, tag):
            return tag
        context = _context(wheelhouse(extra_packages, base_python(client, base)))
        try:
            client.images.build(
                fileobj=context,
                custom_context=True,
                dockerfile=DOCKERFILE,
                # the classic builder builds every stage before the last: stop at the
                # engine's (the browser stage needs Debian's chromium from a mirror)
                target="engine",
                tag=tag,
                rm=True,
                forcerm=True,
                buildargs={
                    "BASE_IMAGE": base,
                    "EXTRA_PACKAGES": " ".join(extra_packages),  # no spaces inside one
                    "PIP_INSTALL_OPTIONS": "--no-index",
                },
            )
        except docker.errors.BuildError as exc:
            lines = "".join(
                str(step.get("stream", step.get("error", ""))) for step in exc.build_log
            )
            raise RuntimeError(f"engine image build failed:\n{lines[-4000:]}") from exc
        _prune(client, keep=tag)
        return tag


def _prune(client: docker.DockerClient, *, keep: str) -> None:
    images = [
        image
        for image in client.images.list(name=ENGINE_REPO)
        if any(t.startswith(f"{ENGINE_REPO}:test-") for t in image.tags)
    ]
    images.sort(key=lambda image: str(image.attrs.get("Created", "")), reverse=True)
    for image in images[KEEP_TAGS:]:
        if keep in image.tags:
            continue
        for tag in image.tags:
            try:
                client.images.remove(tag, noprune=False)
            except docker.errors.APIError:
                continue
