"""A fake Kubernetes API server at the HTTP boundary, for ``KubernetesJobRuntime``.

No API server can be installed here, so ``FakeApiServer`` serves the few REST calls the
runtime makes, on 127.0.0.1, to the official ``kubernetes`` client, with the real API's
semantics for them:

* ``POST`` / ``GET`` / ``DELETE`` of ``batch/v1`` Jobs, ``GET`` (list) of Jobs and Pods, and
  ``POST`` / ``GET`` / ``PUT`` / ``DELETE`` of ``v1`` Secrets, namespaced;
* ``201`` on create, ``409 AlreadyExists`` on create of an existing name, ``404 NotFound`` and
  ``422 Invalid`` (a name that is not a DNS-1123 subdomain, a Job without containers or with
  ``restartPolicy: Always``) as ``Status`` bodies, ``409 Conflict`` on a ``PUT`` whose
  ``metadata.resourceVersion`` is not the stored one;
* one cluster-wide ``resourceVersion`` counter, stamped on every write and on lists;
  ``uid``, ``creationTimestamp``; ``stringData`` of a Secret folded into base64 ``data``;
* label selectors with ``=``, ``==``, ``!=``, ``in (..)``, ``notin (..)``, ``key`` and
  ``!key``;
* ``DELETE`` with ``propagationPolicy`` (``Foreground``: the Job keeps a
  ``deletionTimestamp`` and the ``foregroundDeletion`` finalizer until its pods are gone;
  ``Background``: the Job goes at once, its pods after; ``Orphan``: pods stay) and
  ``gracePeriodSeconds`` (query parameter or ``DeleteOptions`` body), which is the pod's
  SIGTERM-to-SIGKILL time (default: the pod's ``terminationGracePeriodSeconds``).

A small controller loop stands in for the Job controller and the kubelet: each Job gets one
pod (``<job>-<5 chars>``, labelled ``job-name`` / ``batch.kubernetes.io/job-name`` and the
template's labels), whose container runs as a **local process** in its own process group:
``command`` + ``args`` with a base environment (``BASE_ENV`` of this process: PATH, HOME,
the locale; not its credentials or settings, which a real container never sees) plus the
container's ``env`` and ``envFrom`` Secrets, later sources winning (a missing Secret not
marked ``optional`` leaves the pod ``Pending`` with ``CreateContainerConfigError``, as the
kubelet does). Its exit is the container's
``terminated`` state (a signal N is 128+N), the pod's phase ``Succeeded`` / ``Failed`` and
the Job's ``succeeded`` / ``failed`` counts and ``Complete`` / ``Failed`` condition
(``backoffLimit`` 0: no retry). Pods carry the ``batch.kubernetes.io/job-tracking``
finalizer, removed once the Job's status counts them (``SYNC_PASSES`` controller passes after
the pod ended: the Job controller's sync latency), so a deleted pod's final state is visible
for that long, as on a cluster. ``activeDeadlineSeconds`` ends a Job (``DeadlineExceeded``)
and ``ttlSecondsAfterFinished`` deletes a finished one.

Limits (what differs from a real cluster): the image is not pulled or used (a container
without ``command`` fails with ``ErrImagePull``); resources, service accounts, network
policies, RBAC and authentication are stored, not enforced; no watch, patch, field
selectors, pagination, admission webhooks or ``generateName``; ``backoffLimit`` above 0,
``parallelism`` and ``completions`` are ignored (one pod, no retry); a terminated pod is
kept until its Job is deleted (real kubelets do the same for ``restartPolicy: Never``);
everything is in memory and ends with ``stop()``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import ctypes
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
TRACKING = "batch.kubernetes.io/job-tracking"
SYNC_PASSES = 3  # controller passes between a pod's end and the Job controller counting it
_KINDS = {
    "jobs": ("batch", "Job", "batch/v1"),
    "pods": ("", "Pod", "v1"),
    "secrets": ("", "Secret", "v1"),
}

#: What a pod's process inherits from this one, as an image's own environment would give it.
BASE_ENV = frozenset({"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV"})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str, **details: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }
    return web.json_response(body, status=code)


def _split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics for the operators listed in the module doc."""
    for term in _split_selector(selector or ""):
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            inside = key in labels and labels[key] in values
            if (op == "in" and not inside) or (op == "notin" and inside):
                return False
        elif m := re.fullmatch(r"([^!=\s]+)\s*(==|=|!=)\s*(\S*)", term):
            key, op, value = m.groups()
            equal = labels.get(key) == value
            if (op == "!=" and equal) or (op != "!=" and not equal):
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class _Process:
    popen: subprocess.Popen[bytes]
    kill_at: float | None = None


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class FakeApiServer:
    """``start()`` → ``http://127.0.0.1:<port>``; ``stop()`` ends it and its processes."""

    def __init__(self, *, log_dir: Path, controller_period_s: float = 0.05) -> None:
        self.log_dir = log_dir
        self._period = controller_period_s
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._processes: dict[str, _Process] = {}  # pod uid → its container's process
        self._rv = 0
        self._times: dict[str, dict[str, float]] = {}  # job uid → started / finished (monotonic)
        self._terminal: dict[str, int] = {}  # pod uid → the pass in which it ended
        self._pass = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""
        self.requests: list[tuple[str, str]] = []  # (method, path) as received

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._serve(port))
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-apiserver", daemon=True)
        self._thread.start()
        ready.wait(10)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def _serve(self, port: int) -> None:
        app = web.Application()
        base = "/{api:api/v1|apis/batch/v1}/namespaces/{ns}/{kind:jobs|pods|secrets}"
        app.router.add_route("GET", base, self._list)
        app.router.add_route("POST", base, self._create)
        app.router.add_route("GET", base + "/{name}", self._read)
        app.router.add_route("PUT", base + "/{name}", self._replace)
        app.router.add_route("DELETE", base + "/{name}", self._delete)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self._task = asyncio.get_running_loop().create_task(self._controller())

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    async def _shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for process in self._processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(process.popen.wait, 5)
        self._processes.clear()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ storage

    def _stamp(self, obj: dict[str, Any]) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)

    def objects(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        found = [o for (k, ns, _), o in self._objects.items() if k == kind and ns == namespace]
        return sorted(found, key=lambda o: str(o["metadata"]["name"]))

    def _check_kind(self, request: web.Request) -> str | None:
        kind = request.match_info["kind"]
        api = request.match_info["api"]
        return kind if (kind == "jobs") == (api == "apis/batch/v1") else None

    # ------------------------------------------------------------------ REST

    async def _list(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        kind = self._check_kind(request)
        if kind is None:
            return _status(404, "NotFound", "the server could not find the requested resource")
        selector = request.query.get("labelSelector", "")
        items = [
            copy.deepcopy(o)
            for o in self.objects(kind, request.match_info["ns"])
            if selector_matches(selector, o["metadata"].get("labels") or {})
        ]
        _group, kind_name, version = _KINDS[kind]
        return web.json_response(
            {
                "kind": f"{kind_name}List",
                "apiVersion": version,
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }
        )

    async def _create(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        kind = self._check_kind(request)
        if kind is None or kind == "pods":
            return _status(405, "MethodNotAllowed", "the fake creates pods itself")
        ns = request.match_info["ns"]
        body = await request.json()
        meta = body.setdefault("metadata", {})
        name = str(meta.get("name") or "")
        group, kind_name, version = _KINDS[kind]
        if meta.get("namespace", ns) != ns:
            return _status(400, "BadRequest", "the namespace of the object does not match")
        invalid = self._invalid(kind, body)
        if invalid:
            return _status(
                422, "Invalid", f'{kind_name} "{name}" is invalid: {invalid}', name=name, kind=kind
            )
        if (kind, ns, name) in self._objects:
            return _status(
                409,
                "AlreadyExists",
                f'{kind} "{name}" already exists',
                name=name,
                group=group,
                kind=kind,
            )
        meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now())
        body.update(kind=kind_name, apiVersion=version)
        if kind == "secrets":
            self._fold_string_data(body)
        if kind == "jobs":
            self._default_job(body)
        self._stamp(body)
        self._objects[(kind, ns, name)] = body
        return web.json_response(copy.deepcopy(body), status=201)

    def _invalid(self, kind: str, body: dict[str, Any]) -> str:
        name = str(body["metadata"].get("name") or "")
        if not name or len(name) > 253 or not _DNS1123.fullmatch(name):
            return f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain"
        if kind == "jobs":
            if len(name) > 63:
                return "metadata.name: must be no more than 63 characters"
            pod = body.get("spec", {}).get("template", {}).get("spec", {})
            if not pod.get("containers"):
                return "spec.template.spec.containers: Required value"
            if pod.get("restartPolicy") not in ("Never", "OnFailure"):
                return 'spec.template.spec.restartPolicy: Unsupported value: supported "OnFailure", "Never"'
        return ""

    def _fold_string_data(self, body: dict[str, Any]) -> None:
        data = dict(body.get("data") or {})
        for key, value in (body.pop("stringData", None) or {}).items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        body["data"] = data

    def _default_job(self, body: dict[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        name = body["metadata"]["name"]
        spec = body.setdefault("spec", {})
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        template_labels = spec["template"].setdefault("metadata", {}).setdefault("labels", {})
        template_labels.update(
            {"controller-uid": uid, "job-name": name, "batch.kubernetes.io/job-name": name}
        )
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        spec["template"]["spec"].setdefault("terminationGracePeriodSeconds", 30)
        body["status"] = {}

    async def _read(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        kind = self._check_kind(request)
        key = (kind or "", request.match_info["ns"], request.match_info["name"])
        if kind is None or key not in self._objects:
            return self._not_found(kind or request.match_info["kind"], key[2])
        return web.json_response(copy.deepcopy(self._objects[key]))

    def _not_found(self, kind: str, name: str) -> web.Response:
        group = _KINDS.get(kind, ("",))[0]
        return _status(
            404, "NotFound", f'{kind} "{name}" not found', name=name, group=group, kind=kind
        )

    async def _replace(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        kind = self._check_kind(request)
        key = (kind or "", request.match_info["ns"], request.match_info["name"])
        if kind != "secrets":
            return _status(405, "MethodNotAllowed", "the fake replaces secrets only")
        if key not in self._objects:
            return self._not_found(kind, key[2])
        body = await request.json()
        stored = self._objects[key]
        wanted = str(body.get("metadata", {}).get("resourceVersion") or "")
        if wanted and wanted != stored["metadata"]["resourceVersion"]:
            return _status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on secrets "{key[2]}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                name=key[2],
                kind=kind,
            )
        if body.get("metadata", {}).get("name") != key[2]:
            return _status(400, "BadRequest", "the name of the object does not match the URL")
        self._fold_string_data(body)
        meta = body["metadata"]
        for field in ("uid", "creationTimestamp", "namespace"):
            meta[field] = stored["metadata"][field]
        body.update(kind="Secret", apiVersion="v1")
        self._stamp(body)
        self._objects[key] = body
        return web.json_response(copy.deepcopy(body))

    async def _delete(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        kind = self._check_kind(request)
        key = (kind or "", request.match_info["ns"], request.match_info["name"])
        if kind is None or key not in self._objects:
            return self._not_found(kind or request.match_info["kind"], key[2])
        options: dict[str, Any] = {}
        if request.can_read_body:
            with contextlib.suppress(ValueError):
                options = await request.json() or {}
        policy = request.query.get("propagationPolicy") or options.get("propagationPolicy")
        grace_raw = request.query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        grace = int(grace_raw) if grace_raw is not None else None
        obj = self._objects[key]
        if kind == "pods":
            self._delete_pod(obj, grace)
            return web.json_response(copy.deepcopy(obj))
        if kind == "secrets":
            del self._objects[key]
            return _status(200, "", "", name=key[2], kind=kind)
        return self._delete_job(key, obj, policy or "Background", grace)

    def _delete_job(
        self, key: tuple[str, str, str], job: dict[str, Any], policy: str, grace: int | None
    ) -> web.Response:
        if policy not in ("Foreground", "Background", "Orphan"):
            return _status(400, "BadRequest", f"unsupported propagationPolicy {policy!r}")
        pods = self._pods_of(job)
        if policy == "Foreground":
            meta = job["metadata"]
            meta.setdefault("deletionTimestamp", _now())
            meta["finalizers"] = sorted({*meta.get("finalizers", []), "foregroundDeletion"})
            self._stamp(job)
            for pod in pods:
                self._delete_pod(pod, grace)
            return web.json_response(copy.deepcopy(job))
        del self._objects[key]
        for pod in pods:
            if policy == "Orphan":
                pod["metadata"].pop("ownerReferences", None)
            else:
                self._delete_pod(pod, grace)
        return _status(200, "", "", name=key[2], group="batch", kind="jobs")

    # ------------------------------------------------------------------ controller + kubelet

    def _pods_of(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        uid = job["metadata"]["uid"]
        return [
            pod
            for pod in self.objects("pods", job["metadata"]["namespace"])
            if any(ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences", []))
        ]

    def _delete_pod(self, pod: dict[str, Any], grace: int | None) -> None:
        spec_grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        grace = spec_grace if grace is None else grace
        meta = pod["metadata"]
        if "deletionTimestamp" not in meta:
            meta["deletionTimestamp"] = _now()
            meta["deletionGracePeriodSeconds"] = grace
            self._stamp(pod)
        process = self._processes.get(meta["uid"])
        if process is None and pod["status"].get("phase") == "Pending":
            pod["status"]["phase"] = "Failed"  # never started: nothing to stop
            self._terminal[meta["uid"]] = self._pass
            self._stamp(pod)
            return
        if process is None or process.popen.poll() is not None:
            return
        if grace <= 0:
            self._signal(process, signal.SIGKILL)
        elif process.kill_at is None:
            self._signal(process, signal.SIGTERM)
            process.kill_at = time.monotonic() + grace

    def _signal(self, process: _Process, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.popen.pid, signum)

    async def _controller(self) -> None:
        while True:
            try:
                self._reconcile()
            except Exception as exc:  # keep the fake alive, but say so
                print(f"fake apiserver controller: {exc!r}", file=sys.stderr)
            await asyncio.sleep(self._period)

    def _reconcile(self) -> None:
        self._pass += 1
        for (kind, _, _), job in list(self._objects.items()):
            if kind == "jobs":
                self._reconcile_job(job)
        for (kind, ns, name), pod in list(self._objects.items()):
            if kind == "pods":
                self._run_pod(pod)
                owner = [r["uid"] for r in pod["metadata"].get("ownerReferences", [])]
                if (
                    "deletionTimestamp" in pod["metadata"]
                    and self._pod_finished(pod)
                    and not pod["metadata"].get("finalizers")
                ):
                    del self._objects[(kind, ns, name)]  # the kubelet's final delete
                    self._processes.pop(pod["metadata"]["uid"], None)
                elif owner and not any(
                    j["metadata"]["uid"] in owner
                    for (k, _, _), j in self._objects.items()
                    if k == "jobs"
                ):
                    self._delete_pod(pod, None)  # garbage collection of an orphaned dependent

    def _reconcile_job(self, job: dict[str, Any]) -> None:
        meta, spec, status = job["metadata"], job["spec"], job["status"]
        ns = meta["namespace"]
        pods = self._pods_of(job)
        self._count_finished(job, pods)
        if "deletionTimestamp" in meta:
            if not pods:
                del self._objects[("jobs", ns, meta["name"])]
            return
        finished = any(c["type"] in ("Complete", "Failed") for c in status.get("conditions", []))
        if not pods and not finished:
            self._create_pod(job)
            status["startTime"] = _now()
            self._times.setdefault(meta["uid"], {})["started"] = time.monotonic()
            status["active"] = 1
            self._stamp(job)
            return
        if finished:
            ttl = spec.get("ttlSecondsAfterFinished")
            if ttl is not None and time.monotonic() - self._times[meta["uid"]]["finished"] >= ttl:
                del self._objects[("jobs", ns, meta["name"])]
                for pod in pods:
                    self._delete_pod(pod, None)
            return
        deadline = spec.get("activeDeadlineSeconds")
        if (
            deadline is not None
            and time.monotonic() - self._times[meta["uid"]]["started"] >= deadline
        ):
            for pod in pods:
                self._delete_pod(pod, None)
            self._finish(
                job, "Failed", "DeadlineExceeded", "Job was active longer than specified deadline"
            )
            return
        if status.get("succeeded"):
            self._finish(job, "Complete", "", "")
        elif status.get("failed"):
            self._finish(
                job, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            )

    def _count_finished(self, job: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        """The Job controller's pod tracking: a pod that ended in an earlier pass is counted
        in the Job's status, then its ``batch.kubernetes.io/job-tracking`` finalizer is
        removed (only then can the pod object go)."""
        for pod in pods:
            meta = pod["metadata"]
            ended = self._terminal.get(meta["uid"])
            if (
                ended is None
                or self._pass - ended < SYNC_PASSES
                or TRACKING not in meta.get("finalizers", [])
            ):
                continue
            field = "succeeded" if pod["status"].get("phase") == "Succeeded" else "failed"
            job["status"][field] = int(job["status"].get(field, 0)) + 1
            meta["finalizers"] = [f for f in meta["finalizers"] if f != TRACKING]
            self._stamp(pod)
            self._stamp(job)

    def _finish(self, job: dict[str, Any], kind: str, reason: str, message: str) -> None:
        status = job["status"]
        status["active"] = 0
        self._times.setdefault(job["metadata"]["uid"], {})["finished"] = time.monotonic()
        if kind == "Complete":
            status["completionTime"] = _now()
        condition = {"type": kind, "status": "True", "lastTransitionTime": _now()}
        if reason:
            condition.update(reason=reason, message=message)
        status.setdefault("conditions", []).append(condition)
        self._stamp(job)

    def _create_pod(self, job: dict[str, Any]) -> None:
        template = copy.deepcopy(job["spec"]["template"])
        ns, job_name = job["metadata"]["namespace"], job["metadata"]["name"]
        suffix = "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        pod = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": f"{job_name}-{suffix}",
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": _now(),
                "labels": template.get("metadata", {}).get("labels", {}),
                "finalizers": [TRACKING],
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job_name,
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template["spec"],
            "status": {"phase": "Pending"},
        }
        self._stamp(pod)
        self._objects[("pods", ns, pod["metadata"]["name"])] = pod

    def _pod_finished(self, pod: dict[str, Any]) -> bool:
        return pod["status"].get("phase") in ("Succeeded", "Failed") or (
            pod["metadata"]["uid"] not in self._processes
        )

    def _run_pod(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        container = pod["spec"]["containers"][0]
        process = self._processes.get(uid)
        if process is None:
            if pod["status"].get("phase") != "Pending" or "deletionTimestamp" in pod["metadata"]:
                return
            self._start(pod, container)
            return
        if process.kill_at is not None and time.monotonic() >= process.kill_at:
            self._signal(process, signal.SIGKILL)
            process.kill_at = None
        code = process.popen.poll()
        if code is None or pod["status"].get("phase") in ("Succeeded", "Failed"):
            return
        exit_code = 128 - code if code < 0 else code
        self._terminal[uid] = self._pass
        pod["status"] = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {
                        "terminated": {
                            "exitCode": exit_code,
                            "reason": "Completed" if exit_code == 0 else "Error",
                            "finishedAt": _now(),
                        }
                    },
                }
            ],
        }
        self._stamp(pod)

    def _waiting(
        self, pod: dict[str, Any], container: dict[str, Any], reason: str, message: str
    ) -> None:
        pod["status"]["containerStatuses"] = [
            {
                "name": container["name"],
                "image": container.get("image", ""),
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}},
            }
        ]
        self._stamp(pod)

    def _start(self, pod: dict[str, Any], container: dict[str, Any]) -> None:
        ns = pod["metadata"]["namespace"]
        argv = list(container.get("command") or []) + list(container.get("args") or [])
        if not container.get("command"):
            self._waiting(pod, container, "ErrImagePull", "the fake runs commands, not images")
            return
        # a container starts from its image's environment, not the host's: only what a
        # process needs to run here (its interpreter, a home, a locale) is passed on
        env = {k: v for k, v in os.environ.items() if k in BASE_ENV}
        for source in container.get("envFrom") or []:
            ref = (source.get("secretRef") or {}).get("name")
            secret = self._objects.get(("secrets", ns, str(ref)))
            if secret is None and (source.get("secretRef") or {}).get("optional"):
                continue  # an optional Secret that does not exist adds nothing
            if secret is None:
                self._waiting(
                    pod, container, "CreateContainerConfigError", f'secret "{ref}" not found'
                )
                return
            for key, value in (secret.get("data") or {}).items():
                env[key] = base64.b64decode(value).decode()
        for item in container.get("env") or []:
            env[item["name"]] = str(item.get("value", ""))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{pod['metadata']['name']}.log").open("ab") as log:
            popen = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._processes[pod["metadata"]["uid"]] = _Process(popen)
        pod["status"] = {
            "phase": "Running",
            "startTime": _now(),
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": True,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": _now()}},
                }
            ],
        }
        self._stamp(pod)
