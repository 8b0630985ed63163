"""A small evaluator of Azure role assignments with conditions (a test helper).

No emulator here enforces Azure RBAC, so the isolation tests take the role assignments the
tenant deployment produces (on the Resource Manager fake: scope, role, principal, condition)
and ask ``allowed``: may this principal do this action on this resource? As Azure RBAC does,
an assignment applies to its scope and everything below it; its role grants an action when one
of the role's ``actions`` / ``dataActions`` patterns (``*`` wildcards, case-insensitive)
matches and none of its ``notDataActions`` does; and a condition (ABAC, version 2.0) must hold
for the request. There are no deny assignments in these templates.

Conditions: the subset the templates use -- ``(`` ``)``, ``!`` / ``NOT``, ``AND``, ``OR``,
``ActionMatches{'...'}``, ``SubOperationMatches{'...'}``, and ``@Resource[...]`` /
``@Request[...]`` attributes compared with ``StringEquals``, ``StringStartsWith`` or
``StringLike`` to a quoted string. An attribute the request does not carry makes its
comparison false, as Azure evaluates it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Role:
    actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = field(default=())


#: The built-in roles the templates assign, with their permissions as Azure publishes them.
BUILT_IN = {
    "090c5cfd-751d-490a-894a-3ce6f1109419": Role(  # Azure Service Bus Data Owner
        actions=("Microsoft.ServiceBus/*",), data_actions=("Microsoft.ServiceBus/*",)
    ),
    "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39": Role(  # Azure Service Bus Data Sender
        actions=(
            "Microsoft.ServiceBus/*/queues/read",
            "Microsoft.ServiceBus/*/topics/read",
            "Microsoft.ServiceBus/*/topics/subscriptions/read",
        ),
        data_actions=("Microsoft.ServiceBus/*/send/action",),
    ),
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": Role(  # Storage Blob Data Contributor
        actions=(
            "Microsoft.Storage/storageAccounts/blobServices/containers/delete",
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/containers/write",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ),
        data_actions=(
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/move/action",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action",
        ),
    ),
}

_TOKEN = re.compile(
    r"\s*(?:(?P<fn>ActionMatches|SubOperationMatches)\{'(?P<arg>[^']*)'\}"
    r"|(?P<attr>@(?:Resource|Request)\[[^\]]+\])"
    r"|(?P<str>'[^']*')"
    r"|(?P<word>AND|OR|NOT|StringEquals|StringStartsWith|StringLike)\b"
    r"|(?P<op>[()!]))"
)


@dataclass(frozen=True)
class Request:
    """One request: its action, sub-operation and attributes (``@Resource[...]`` keys)."""

    action: str
    resource: str
    sub_operation: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


class _Condition:
    def __init__(self, text: str, request: Request) -> None:
        self._tokens: list[tuple[str, str]] = []
        at = 0
        while at < len(text.rstrip()):
            match = _TOKEN.match(text, at)
            if match is None or not match.group().strip():
                raise AssertionError(f"cannot parse the condition near {text[at : at + 40]!r}")
            kind = next(k for k, v in match.groupdict().items() if v is not None and k != "arg")
            value = match.group("arg") if kind == "fn" else match.group(kind)
            self._tokens.append((match.group("fn") or kind, value))
            at = match.end()
        self._at, self._request = 0, request

    def holds(self) -> bool:
        result = self._or()
        assert self._at == len(self._tokens), "trailing tokens in the condition"
        return result

    def _peek(self) -> tuple[str, str]:
        return self._tokens[self._at] if self._at < len(self._tokens) else ("", "")

    def _take(self) -> tuple[str, str]:
        token = self._peek()
        self._at += 1
        return token

    def _or(self) -> bool:
        results = [self._and()]
        while self._peek() == ("word", "OR"):
            self._take()
            results.append(self._and())
        return any(results)

    def _and(self) -> bool:
        results = [self._not()]
        while self._peek() == ("word", "AND"):
            self._take()
            results.append(self._not())
        return all(results)

    def _not(self) -> bool:
        if self._peek() in (("op", "!"), ("word", "NOT")):
            self._take()
            return not self._not()
        return self._atom()

    def _atom(self) -> bool:
        kind, value = self._take()
        if (kind, value) == ("op", "("):
            result = self._or()
            assert self._take() == ("op", ")"), "unbalanced parentheses"
            return result
        if kind == "ActionMatches":
            return fnmatch.fnmatchcase(self._request.action.lower(), value.lower())
        if kind == "SubOperationMatches":
            return self._request.sub_operation == value
        if kind == "attr":
            _, operator = self._take()
            _, literal = self._take()
            wanted = literal[1:-1]
            key = value[value.index("[") + 1 : -1]
            actual = self._request.attributes.get(key)
            if actual is None:
                return False
            if operator == "StringEquals":
                return actual == wanted
            if operator == "StringStartsWith":
                return actual.startswith(wanted)
            if operator == "StringLike":
                return fnmatch.fnmatchcase(actual, wanted)
        raise AssertionError(f"unexpected {kind} {value!r} in the condition")


def _covers(scope: str, resource: str) -> bool:
    return resource.lower() == scope.lower() or resource.lower().startswith(f"{scope.lower()}/")


def _grants(role: Role, action: str) -> bool:
    def hit(patterns: Sequence[str]) -> bool:
        return any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in patterns)

    return (hit(role.actions) or hit(role.data_actions)) and not hit(role.not_data_actions)


def allowed(
    assignments: Sequence[Mapping[str, Any]],
    principal: str,
    request: Request,
    roles: Mapping[str, Role] = BUILT_IN,
) -> bool:
    """Whether ``principal`` may make ``request`` under ``assignments``."""
    for assignment in assignments:
        if assignment["principalId"] != principal:
            continue
        if not _covers(assignment["scope"], request.resource):
            continue
        role = roles.get(assignment["roleDefinitionId"].rsplit("/", 1)[-1])
        if role is None or not _grants(role, request.action):
            continue
        condition = assignment.get("condition")
        if condition:
            assert assignment.get("conditionVersion") == "2.0"
            if not _Condition(condition, request).holds():
                continue
        return True
    return False
