"""Working fakes of the two Azure management-plane clients the adapters call (no emulator of
Container Instances or Resource Manager runs here).

``FakeContainerInstanceClient``
    ``azure.mgmt.containerinstance.aio.ContainerInstanceManagementClient`` as
    ``ContainerInstancesRuntime`` uses it: ``container_groups.begin_create_or_update`` /
    ``get`` / ``stop`` / ``begin_delete`` / ``list_by_resource_group`` and ``close``, taking and
    returning the SDK's own models (``ContainerGroup`` with its instance view) and raising
    ``azure.core`` ``ResourceNotFoundError`` for unknown groups. Each container group is a real
    child process: the container runs ``python -c <script>`` (the image is ignored) with this
    process's environment plus the group's environment variables (``value`` or
    ``secure_value``); ``stop`` SIGKILLs its process group, without a SIGTERM first, as the real
    service does (azure-cli issue 16673), and ``begin_delete`` SIGKILLs it and forgets the
    group.

``FakeResourceManagementClient``
    ``azure.mgmt.resource.resources.aio.ResourceManagementClient``'s generic resource
    operations (``resources.begin_create_or_update_by_id``, ``get_by_id``,
    ``begin_delete_by_id``) as ``ArmProvisioner`` uses them. PUTting a
    ``Microsoft.Resources/deployments`` resource *evaluates the template*: required
    parameters must be given, ``condition`` / ``name`` / output expressions are evaluated, and
    every resource is created under its resource id -- a child resource only if its top-level
    parent exists (registered with ``existing=``), else 404 ``ParentResourceNotFound``.

Limits
    Container groups: no images, registries, identities, networks, quotas, regions or
    restarts; the container shares this machine and its environment; ``stop`` is a kill, like
    ACI's (no grace, no SIGTERM); instance views are synthesised from the child process (exit
    code 137 for a SIGKILL, as ACI reports it). ARM: the expression language covers only ``parameters``, ``variables``,
    ``format``, ``resourceId``, ``subscriptionResourceId``, ``concat``, ``toLower``, ``empty``,
    ``not``, ``and``, ``guid``, ``if``, ``extensionResourceId`` and ``reference(...).property`` with string literals
    (what ``deploy/azure/tenant.json`` uses); a user-assigned identity gets fresh
    ``principalId`` / ``clientId`` GUIDs when first created; role assignments are kept as resources with their
    ``scope`` and properties (``role_assignments``), never enforced, on a scope that exists or
    whose top-level resource does (the results container and inbox of ``main.bicep``); no property validation, API
    versions, RBAC, what-if, dependsOn ordering, complete mode or asynchronous failures --
    deployments succeed at once or raise.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerinstance.models import (
    ContainerGroup,
    ContainerGroupPropertiesInstanceView,
    ContainerPropertiesInstanceView,
    ContainerState,
)
from azure.mgmt.resource.resources.models import GenericResource


def arm_error(status: int, message: str) -> HttpResponseError:
    """An ARM error as the SDK raises it (``ResourceNotFoundError`` for 404)."""
    error = (ResourceNotFoundError if status == 404 else HttpResponseError)(message)
    error.status_code = status
    return error


class FakePoller:
    """``azure.core.polling.AsyncLROPoller``: only ``result()``."""

    def __init__(self, value: Any) -> None:
        self._value = value

    async def result(self) -> Any:
        return self._value


# --------------------------------------------------------------------------- container instances


@dataclass
class _Group:
    model: ContainerGroup
    process: subprocess.Popen[bytes]
    stopped: bool = False


class _ContainerGroups:
    def __init__(self, script: str, log_dir: Path) -> None:
        self._script, self._log_dir = script, log_dir
        self.groups: dict[tuple[str, str], _Group] = {}

    def _find(self, resource_group_name: str, container_group_name: str) -> _Group:
        group = self.groups.get((resource_group_name, container_group_name))
        if group is None:
            raise ResourceNotFoundError(f"container group {container_group_name} not found")
        return group

    async def begin_create_or_update(
        self, resource_group_name: str, container_group_name: str, container_group: ContainerGroup
    ) -> FakePoller:
        env = dict(os.environ)
        for container in container_group.containers:
            for variable in container.environment_variables or []:
                env[variable.name] = variable.secure_value or variable.value or ""
        self._log_dir.mkdir(parents=True, exist_ok=True)
        with (self._log_dir / f"{container_group_name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", self._script],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        container_group.name = container_group_name
        container_group.provisioning_state = "Succeeded"
        self.groups[(resource_group_name, container_group_name)] = _Group(container_group, process)
        return FakePoller(container_group)

    async def get(self, resource_group_name: str, container_group_name: str) -> ContainerGroup:
        group = self._find(resource_group_name, container_group_name)
        code = group.process.poll()
        state = ContainerState()  # its fields are read-only for constructors: set them after
        if code is None:
            state.state, state.detail_status = "Running", ""
        else:
            state.state, state.detail_status = "Terminated", "Completed"
            state.exit_code = 128 - code if code < 0 else code
        for container in group.model.containers:
            container.instance_view = ContainerPropertiesInstanceView()
            container.instance_view.current_state = state
        group_state = "Stopped" if group.stopped else ("Running" if code is None else "Succeeded")
        group.model.instance_view = ContainerGroupPropertiesInstanceView()
        group.model.instance_view.state = group_state
        return group.model

    async def stop(self, resource_group_name: str, container_group_name: str) -> None:
        group = self._find(resource_group_name, container_group_name)
        group.stopped = True
        _kill(group.process)  # ACI stops a group by SIGKILL: no SIGTERM, no grace

    async def begin_delete(self, resource_group_name: str, container_group_name: str) -> FakePoller:
        group = self.groups.pop((resource_group_name, container_group_name), None)
        if group is not None:
            _kill(group.process)
        return FakePoller(None)

    def list_by_resource_group(self, resource_group_name: str) -> AsyncIterator[ContainerGroup]:
        found = [g.model for (rg, _), g in self.groups.items() if rg == resource_group_name]

        async def listing() -> AsyncIterator[ContainerGroup]:
            for model in found:
                yield model

        return listing()


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class FakeContainerInstanceClient:
    """Container groups as child processes running ``script``."""

    def __init__(self, *, script: str, log_dir: Path) -> None:
        self.container_groups = _ContainerGroups(script, log_dir)

    async def close(self) -> None:
        return None

    def kill_all(self) -> None:
        for group in self.container_groups.groups.values():
            _kill(group.process)
        self.container_groups.groups.clear()


# --------------------------------------------------------------------------- resource manager

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[(),.]))"
)


class _Expression:
    """A tiny evaluator of ARM template expressions (``[function(args)]``)."""

    def __init__(self, text: str, functions: Mapping[str, Any]) -> None:
        self._tokens = [m for m in _TOKEN.finditer(text) if m.group().strip()]
        self._at, self._functions = 0, functions

    def _next(self) -> re.Match[str]:
        token = self._tokens[self._at]
        self._at += 1
        return token

    def value(self) -> Any:
        token = self._next()
        if token.group("str") is not None:
            return token.group("str")[1:-1].replace("''", "'")
        name = token.group("name")
        if name is None or self._next().group("op") != "(":
            raise arm_error(400, f"InvalidTemplate: cannot parse near {token.group()!r}")
        args: list[Any] = []
        while self._tokens[self._at].group("op") != ")":
            args.append(self.value())
            if self._tokens[self._at].group("op") == ",":
                self._at += 1
        self._at += 1
        function = self._functions.get(name.lower())
        if function is None:
            raise arm_error(400, f"InvalidTemplate: unsupported function {name}")
        result = function(*args)
        while self._at < len(self._tokens) and self._tokens[self._at].group("op") == ".":
            result = result[self._tokens[self._at + 1].group("name")]  # reference(...).clientId
            self._at += 2
        return result


def _split_type(relative: str) -> tuple[str, list[str]]:
    """``Microsoft.X/a/n1/b/n2`` -> (``Microsoft.X/a/b``, [n1, n2]): a relative resource id."""
    namespace, *rest = relative.split("/")
    return "/".join([namespace, *rest[0::2]]), rest[1::2]


def _identity_ids(resource_id: str) -> dict[str, str]:
    """The ids Entra ID gives a new user-assigned identity (fresh GUIDs, as ARM does)."""
    return {"principalId": str(uuid.uuid4()), "clientId": str(uuid.uuid4()), "tenantId": "entra"}


class _Resources:
    def __init__(self, subscription_id: str, existing: Iterable[str]) -> None:
        self._subscription = subscription_id
        self.items: dict[str, GenericResource] = {
            rid.lower(): GenericResource(properties={}) for rid in existing
        }

    def _rid(self, group: str, type_: str, names: list[str]) -> str:
        namespace, *types = type_.split("/")
        if len(types) != len(names):
            raise arm_error(400, f"InvalidTemplate: {type_} needs {len(types)} name segments")
        path = "/".join(f"{t}/{n}" for t, n in zip(types, names, strict=True))
        return f"/subscriptions/{self._subscription}/resourceGroups/{group}/providers/{namespace}/{path}"

    def _deploy(self, group: str, body: Mapping[str, Any]) -> dict[str, Any]:
        template, given = body["template"], body.get("parameters") or {}
        parameters: dict[str, Any] = {}
        for name, spec in template.get("parameters", {}).items():
            if name in given:
                parameters[name] = given[name]["value"]
            elif "defaultValue" in spec:
                parameters[name] = spec["defaultValue"]
            else:
                raise arm_error(400, f"InvalidTemplate: parameter {name} has no value")
        unknown = set(given) - set(parameters)
        if unknown:
            raise arm_error(400, f"InvalidTemplate: unknown parameters {sorted(unknown)}")
        variables: dict[str, Any] = {}
        functions = {
            "parameters": parameters.__getitem__,
            "variables": variables.__getitem__,
            "format": lambda fmt, *args: fmt.format(*args),
            "concat": lambda *args: "".join(str(a) for a in args),
            "tolower": lambda s: s.lower(),
            "empty": lambda v: not v,
            "not": lambda v: not v,
            "if": lambda c, a, b: a if c else b,
            "and": lambda *args: all(args),
            "guid": lambda *args: str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(args))),
            "resourceid": lambda t, *n: self._rid(group, t, list(n)),
            "subscriptionresourceid": lambda t, *n: (
                f"/subscriptions/{self._subscription}/providers/{t}/{'/'.join(n)}"
            ),
            "extensionresourceid": lambda scope, t, n: f"{scope}/providers/{t}/{n}",
            "reference": lambda rid, *_: dict(self.get_sync(rid).properties or {}),
        }

        def evaluate(value: Any) -> Any:
            if isinstance(value, str) and value.startswith("[") and not value.startswith("[["):
                return _Expression(value[1:-1], functions).value()
            if isinstance(value, dict):
                return {k: evaluate(v) for k, v in value.items()}
            return value

        for name, expression in template.get("variables", {}).items():
            variables[name] = evaluate(expression)
        for resource in template.get("resources", []):
            if not evaluate(resource.get("condition", True)):
                continue
            properties = evaluate(resource.get("properties", {}))
            if "scope" in resource:  # an extension resource (a role assignment) on ``scope``
                scope = self._rid(group, *_split_type(evaluate(resource["scope"])))
                top = "/".join(scope.split("/")[:9])  # main.bicep made its children
                if scope.lower() not in self.items and top.lower() not in self.items:
                    raise arm_error(404, f"ResourceNotFound: scope {scope}")
                namespace, type_ = resource["type"].split("/", 1)
                rid = f"{scope}/providers/{namespace}/{type_}/{evaluate(resource['name'])}"
                self.items[rid.lower()] = GenericResource(properties={**properties, "scope": scope})
                continue
            rid = self._rid(group, resource["type"], evaluate(resource["name"]).split("/"))
            parent = "/".join(rid.split("/")[:9])
            if parent.lower() != rid.lower() and parent.lower() not in self.items:
                raise arm_error(404, f"ParentResourceNotFound: {parent}")
            if resource["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities":
                existing = self.items.get(rid.lower())  # ARM keeps an identity's ids on re-PUT
                properties = dict(existing.properties or {}) if existing else _identity_ids(rid)
            self.items[rid.lower()] = GenericResource(properties=properties)
        outputs = {
            name: {"type": spec["type"], "value": evaluate(spec["value"])}
            for name, spec in template.get("outputs", {}).items()
        }
        return {"provisioningState": "Succeeded", "mode": body.get("mode"), "outputs": outputs}

    async def begin_create_or_update_by_id(
        self, resource_id: str, parameters: GenericResource, *, api_version: str
    ) -> FakePoller:
        match = re.fullmatch(
            r"/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/"
            r"Microsoft\.Resources/deployments/[A-Za-z0-9_.()-]{1,64}",
            resource_id,
        )
        if match is None:
            raise arm_error(400, f"InvalidResourceId: {resource_id}")
        properties = self._deploy(match.group(1), parameters.properties)
        deployment = GenericResource(properties=properties)
        self.items[resource_id.lower()] = deployment
        return FakePoller(deployment)

    def get_sync(self, resource_id: str) -> GenericResource:
        found = self.items.get(resource_id.lower())
        if found is None:
            raise arm_error(404, f"ResourceNotFound: {resource_id}")
        return found

    async def get_by_id(self, resource_id: str, *, api_version: str) -> GenericResource:
        return self.get_sync(resource_id)

    async def begin_delete_by_id(self, resource_id: str, *, api_version: str) -> FakePoller:
        """Delete the resource with its children and the role assignments on it."""
        gone = resource_id.lower()
        for rid in [r for r in self.items if r == gone or r.startswith(f"{gone}/")]:
            del self.items[rid]
        return FakePoller(None)


class FakeResourceManagementClient:
    """Resource Manager with deployments evaluated in memory."""

    def __init__(self, *, subscription_id: str, existing: Iterable[str] = ()) -> None:
        self.resources = _Resources(subscription_id, existing)

    def exists(self, resource_id: str) -> bool:
        return resource_id.lower() in self.resources.items

    def role_assignments(self) -> list[dict[str, Any]]:
        """Every role assignment deployed: ``scope``, ``roleDefinitionId``, ``principalId``."""
        return [
            dict(r.properties or {})
            for rid, r in self.resources.items.items()
            if "/providers/microsoft.authorization/roleassignments/" in rid
        ]

    async def close(self) -> None:
        return None
