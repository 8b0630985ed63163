"""A fake of Cloud Run jobs at the SDK boundary: executions are real local processes.

``FakeCloudRun`` has the methods ``CloudRunRuntime`` calls on ``run_v2.JobsAsyncClient``
(``run_job``), ``ExecutionsAsyncClient`` (``get_execution``, ``list_executions`` -- newest
first, ``cancel_execution``) and ``TasksAsyncClient`` (``list_tasks``), and passes for all three.
They return real ``run_v2`` messages: an execution's ``template`` holds the job's environment
with the overrides applied, ``running_count``/``succeeded_count``/``failed_count``/
``cancelled_count``, ``completion_time`` and a ``Completed`` condition reflect its process
(and ``template.service_account`` is the job's),
and its one task's ``last_attempt_result`` has the exit code or the killing signal. A job is
registered with ``add_job(name, command)``; ``run_job`` starts ``command`` in its own process
group with this process's environment plus the job's and the overrides'. ``run_job`` answers
with an object whose ``metadata`` is the new execution, like the real long-running operation.

Jobs: ``get_job`` (the job's ``template.template.service_account`` only); ``create_job``,
whose new job runs the command of the job its label ``skycrawl-base-job`` names (the fake has
no images: ``CloudRunRuntime`` copies that job's template and labels the copy so) with the
given template's service account, answering an operation whose ``result()`` is the job
(``AlreadyExists`` for a second one); ``delete_job`` (``FailedPrecondition`` while one of its
executions runs); ``list_executions`` takes ``jobs/-`` for every job of the location, as
Cloud Run does. ``jobs()`` lists the job names.

Limits: one task per execution (``task_count`` other than 1 is refused), no retries, task
timeouts, image, CPU/memory, parallelism, labels or IAM; executions start at once (Cloud Run
takes seconds, during which they are ``pending``); a job name that was not added is
``NotFound``. ``cancel_execution`` sends SIGTERM and SIGKILL ``kill_after_s`` later: Cloud Run
always waits 10 s (the default here); the contract suite sets 1 s, since its forced-stop test
expects an exit within 5 s. ``shutdown()`` kills every process group left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import run_v2


@dataclass
class _Execution:
    name: str
    job: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    created: datetime
    service_account: str = ""
    cancelled: bool = False
    finished: datetime | None = None
    timers: list[threading.Timer] = field(default_factory=list)

    def poll(self) -> int | None:
        code = self.process.poll()
        if code is not None and self.finished is None:
            self.finished = datetime.now(UTC)
        return code

    def message(self) -> run_v2.Execution:
        code = self.poll()
        env = [run_v2.EnvVar(name=k, value=v) for k, v in sorted(self.env.items())]
        execution = run_v2.Execution(
            name=self.name,
            job=self.job.rsplit("/", 1)[-1],
            task_count=1,
            create_time=self.created,
            start_time=self.created,
            template=run_v2.TaskTemplate(
                containers=[run_v2.Container(env=env)], service_account=self.service_account
            ),
        )
        state = run_v2.Condition.State.CONDITION_RECONCILING
        if code is None:
            execution.running_count = 1
        else:
            execution.completion_time = self.finished
            if self.cancelled:
                execution.cancelled_count = 1
                state = run_v2.Condition.State.CONDITION_FAILED
            elif code == 0:
                execution.succeeded_count = 1
                state = run_v2.Condition.State.CONDITION_SUCCEEDED
            else:
                execution.failed_count = 1
                state = run_v2.Condition.State.CONDITION_FAILED
        execution.conditions = [run_v2.Condition(type_="Completed", state=state)]
        return execution

    def task(self) -> run_v2.Task:
        task = run_v2.Task(name=f"{self.name}/tasks/{self.name.rsplit('/', 1)[-1]}-task0")
        code = self.poll()
        if code is not None:
            result = run_v2.TaskAttemptResult()
            if code < 0:
                result.term_signal = -code
            else:
                result.exit_code = code
            task.last_attempt_result = result
        return task


@dataclass
class _Operation:
    metadata: run_v2.Execution


@dataclass
class _JobOperation:
    job: run_v2.Job

    async def result(self) -> run_v2.Job:
        return self.job


@dataclass
class _Job:
    command: tuple[str, ...]
    env: dict[str, str]
    service_account: str = ""

    def message(self, name: str) -> run_v2.Job:
        job = run_v2.Job(name=name)
        job.template.template.service_account = self.service_account
        return job


class _Pager:
    def __init__(self, items: Sequence[Any]) -> None:
        self._items = list(items)

    def __aiter__(self) -> AsyncIterator[Any]:
        async def iterate() -> AsyncIterator[Any]:
            for item in self._items:
                yield item

        return iterate()


class _Transport:
    async def close(self) -> None:
        pass


class FakeCloudRun:
    """Jobs, executions and tasks clients in one, backed by local processes."""

    def __init__(self, *, kill_after_s: float = 10.0) -> None:
        self.kill_after_s = kill_after_s
        self.transport = _Transport()
        self._jobs: dict[str, _Job] = {}
        self._executions: dict[str, _Execution] = {}
        self._lock = threading.Lock()
        self.requests: list[run_v2.RunJobRequest] = []

    def add_job(
        self,
        name: str,
        command: Sequence[str],
        env: dict[str, str] | None = None,
        service_account: str = "engine@p.iam.gserviceaccount.com",
    ) -> None:
        self._jobs[name] = _Job(tuple(command), dict(env or {}), service_account)

    def jobs(self) -> set[str]:
        return set(self._jobs)

    def started(self, guid: str) -> _Execution:
        """The one execution whose environment carries ``SKYCRAWL_CONTAINER_ID=guid``."""
        with self._lock:
            [found] = [
                e for e in self._executions.values() if e.env.get("SKYCRAWL_CONTAINER_ID") == guid
            ]
        return found

    async def get_job(self, *, name: str, **_: Any) -> run_v2.Job:
        if name not in self._jobs:
            raise gexc.NotFound(f"job {name} not found")
        return self._jobs[name].message(name)

    async def create_job(
        self, *, parent: str, job: run_v2.Job, job_id: str, **_: Any
    ) -> _JobOperation:
        name = f"{parent}/jobs/{job_id}"
        if name in self._jobs:
            raise gexc.AlreadyExists(f"job {name} exists")
        source = self._jobs.get(f"{parent}/jobs/{job.labels.get('skycrawl-base-job', '')}")
        if source is None:
            raise gexc.InvalidArgument("no job named by the label skycrawl-base-job to copy")
        made = _Job(source.command, dict(source.env), job.template.template.service_account)
        self._jobs[name] = made
        return _JobOperation(made.message(name))

    async def delete_job(self, *, name: str, **_: Any) -> _JobOperation:
        job = self._jobs.get(name)
        if job is None:
            raise gexc.NotFound(f"job {name} not found")
        with self._lock:
            running = [e for e in self._executions.values() if e.job == name and e.poll() is None]
        if running:
            raise gexc.FailedPrecondition(f"job {name} has running executions")
        del self._jobs[name]
        return _JobOperation(job.message(name))

    # ---------------------------------------------------------------- JobsAsyncClient

    async def run_job(self, *, request: run_v2.RunJobRequest, **_: Any) -> _Operation:
        job = self._jobs.get(request.name)
        if job is None:
            raise gexc.NotFound(f"job {request.name} not found")
        if request.overrides.task_count not in (0, 1):
            raise gexc.InvalidArgument("the fake runs one task per execution")
        command, env = job.command, dict(job.env)
        for override in request.overrides.container_overrides:
            env.update({variable.name: variable.value for variable in override.env})
        name = f"{request.name}/executions/{request.name.rsplit('/', 1)[-1]}-{uuid.uuid4().hex[:5]}"
        process = subprocess.Popen(
            command,
            env={**os.environ, **env, "CLOUD_RUN_EXECUTION": name.rsplit("/", 1)[-1]},
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        execution = _Execution(
            name, request.name, env, process, datetime.now(UTC), job.service_account
        )
        with self._lock:
            self._executions[name] = execution
            self.requests.append(request)
        return _Operation(metadata=execution.message())

    # ---------------------------------------------------------------- ExecutionsAsyncClient

    def _get(self, name: str) -> _Execution:
        with self._lock:
            execution = self._executions.get(name)
        if execution is None:
            raise gexc.NotFound(f"execution {name} not found")
        return execution

    async def get_execution(self, *, name: str, **_: Any) -> run_v2.Execution:
        return self._get(name).message()

    async def list_executions(self, *, parent: str, **_: Any) -> _Pager:
        with self._lock:
            found = [
                e
                for e in self._executions.values()
                if e.job == parent
                or (parent.endswith("/jobs/-") and e.job.startswith(parent.removesuffix("-")))
            ]
        found.sort(key=lambda e: e.created, reverse=True)
        return _Pager([e.message() for e in found])

    async def cancel_execution(self, *, name: str, **_: Any) -> _Operation:
        execution = self._get(name)
        if execution.poll() is not None:
            raise gexc.FailedPrecondition(f"execution {name} has completed")
        execution.cancelled = True
        _signal(execution.process.pid, signal.SIGTERM)
        timer = threading.Timer(self.kill_after_s, _signal, (execution.process.pid, signal.SIGKILL))
        timer.daemon = True
        timer.start()
        execution.timers.append(timer)
        return _Operation(metadata=execution.message())

    # ---------------------------------------------------------------- TasksAsyncClient

    async def list_tasks(self, *, parent: str, **_: Any) -> _Pager:
        return _Pager([self._get(parent).task()])

    def shutdown(self) -> None:
        with self._lock:
            executions = list(self._executions.values())
        for execution in executions:
            for timer in execution.timers:
                timer.cancel()
            _signal(execution.process.pid, signal.SIGKILL)
            execution.process.wait(5)


def _signal(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
