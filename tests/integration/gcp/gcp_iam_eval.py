"""A small evaluator of Google Cloud IAM allow policies with conditions (a test helper).

No emulator here enforces IAM, so the isolation tests take the policies the provisioner and
the runtime wrote (on ``FakePubSubIam`` and ``FakeGcsServer``) and ask ``allowed``: may this
principal have this permission on this resource? As IAM evaluates it, a policy applies to its
resource and everything below it (an object inherits its bucket's policy, a topic or a
subscription its project's); a binding grants a permission when the principal is one of its
members, its role holds the permission (``ROLES``: the predefined roles the adapters use,
with the permissions Google publishes for them) and its condition, if any, holds for the
resource asked about. There are no deny policies here.

Resources, as IAM names them: ``projects/P/topics/T``, ``projects/P/subscriptions/S``,
``projects/_/buckets/B`` (``storage.objects.list`` is checked there) and
``projects/_/buckets/B/objects/KEY`` (get, create, delete, update), ``projects/P`` (what is
checked on the project: ``pubsub.subscriptions.create``, Firestore's ``datastore.*``).

Conditions: the subset of CEL the adapters write -- ``resource.name`` / ``resource.type``
with ``.startsWith("...")``, ``== "..."`` or ``!= "..."``, combined with ``&&``, ``||``,
``!`` and parentheses. Anything else fails the parse (the test then fails, never passes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_PUBSUB_VIEWER = {
    "pubsub.schemas.get",
    "pubsub.schemas.list",
    "pubsub.snapshots.get",
    "pubsub.snapshots.list",
    "pubsub.subscriptions.get",
    "pubsub.subscriptions.list",
    "pubsub.topics.get",
    "pubsub.topics.list",
}
_STORAGE_VIEWER = {
    "storage.folders.get",
    "storage.folders.list",
    "storage.managedFolders.get",
    "storage.managedFolders.list",
    "storage.objects.get",
    "storage.objects.list",
}

#: The predefined roles the adapters grant, with their permissions as Google publishes them
#: (``resourcemanager.projects.*`` left out: nothing here is asked about them).
ROLES: dict[str, frozenset[str]] = {
    "roles/pubsub.publisher": frozenset({"pubsub.topics.publish"}),
    "roles/pubsub.subscriber": frozenset(
        {
            "pubsub.snapshots.seek",
            "pubsub.subscriptions.consume",
            "pubsub.topics.attachSubscription",
        }
    ),
    "roles/pubsub.viewer": frozenset(_PUBSUB_VIEWER),
    "roles/storage.objectViewer": frozenset(_STORAGE_VIEWER),
    "roles/storage.objectAdmin": frozenset(
        {
            *_STORAGE_VIEWER,
            "storage.folders.create",
            "storage.folders.delete",
            "storage.folders.rename",
            "storage.managedFolders.create",
            "storage.managedFolders.delete",
            "storage.multipartUploads.abort",
            "storage.multipartUploads.create",
            "storage.multipartUploads.list",
            "storage.multipartUploads.listParts",
            "storage.objects.create",
            "storage.objects.delete",
            "storage.objects.getIamPolicy",
            "storage.objects.move",
            "storage.objects.overrideUnlockedRetention",
            "storage.objects.restore",
            "storage.objects.setIamPolicy",
            "storage.objects.setRetention",
            "storage.objects.update",
        }
    ),
}


@dataclass(frozen=True)
class Binding:
    role: str
    members: frozenset[str]
    expression: str = ""


def resource_type(resource: str) -> str:
    if "/objects/" in resource:
        return "storage.googleapis.com/Object"
    if resource.startswith("projects/_/buckets/"):
        return "storage.googleapis.com/Bucket"
    if "/subscriptions/" in resource:
        return "pubsub.googleapis.com/Subscription"
    if "/topics/" in resource:
        return "pubsub.googleapis.com/Topic"
    return "cloudresourcemanager.googleapis.com/Project"


def ancestors(resource: str, project: str) -> list[str]:
    """``resource`` and what it inherits policies from, nearest first."""
    found = [resource]
    if "/objects/" in resource:
        found.append(resource.split("/objects/", 1)[0])
    if resource != f"projects/{project}":
        found.append(f"projects/{project}")
    return found


_TOKEN = re.compile(
    r"\s*(?:(?P<attr>resource\.(?:name|type))"
    r"|(?P<call>\.startsWith\()"
    r'|(?P<str>"[^"\\]*")'
    r"|(?P<op>&&|\|\||==|!=|!|\(|\)))"
)


class _Condition:
    def __init__(self, text: str, resource: str) -> None:
        self._tokens: list[tuple[str, str]] = []
        at, text = 0, text.strip()
        while at < len(text):
            match = _TOKEN.match(text, at)
            if match is None or not match.group().strip():
                raise AssertionError(f"cannot parse the condition near {text[at : at + 40]!r}")
            kind = next(k for k, v in match.groupdict().items() if v is not None)
            self._tokens.append((kind, match.group(kind)))
            at = match.end()
        self._at = 0
        self._attrs = {"resource.name": resource, "resource.type": resource_type(resource)}

    def holds(self) -> bool:
        result = self._or()
        assert self._at == len(self._tokens), "trailing tokens in the condition"
        return result

    def _peek(self) -> tuple[str, str]:
        return self._tokens[self._at] if self._at < len(self._tokens) else ("", "")

    def _take(self, kind: str | None = None) -> str:
        token = self._peek()
        assert kind is None or token[0] == kind, f"expected {kind}, got {token}"
        self._at += 1
        return token[1]

    def _or(self) -> bool:
        results = [self._and()]
        while self._peek() == ("op", "||"):
            self._take()
            results.append(self._and())
        return any(results)

    def _and(self) -> bool:
        results = [self._not()]
        while self._peek() == ("op", "&&"):
            self._take()
            results.append(self._not())
        return all(results)

    def _not(self) -> bool:
        if self._peek() == ("op", "!"):
            self._take()
            return not self._not()
        return self._atom()

    def _atom(self) -> bool:
        if self._peek() == ("op", "("):
            self._take()
            result = self._or()
            assert self._take("op") == ")", "unbalanced parentheses"
            return result
        actual = self._attrs[self._take("attr")]
        if self._peek()[0] == "call":
            self._take()
            wanted = self._take("str")[1:-1]
            assert self._take("op") == ")", "unclosed startsWith("
            return actual.startswith(wanted)
        operator = self._take("op")
        wanted = self._take("str")[1:-1]
        if operator == "==":
            return actual == wanted
        if operator == "!=":
            return actual != wanted
        raise AssertionError(f"unexpected operator {operator!r}")


def holds(expression: str, resource: str) -> bool:
    return not expression or _Condition(expression, resource).holds()


def allowed(
    policies: Mapping[str, Iterable[Binding]],
    principal: str,
    permission: str,
    resource: str,
    *,
    project: str,
) -> bool:
    """Whether ``principal`` (``serviceAccount:...``) holds ``permission`` on ``resource``."""
    for scope in ancestors(resource, project):
        for binding in policies.get(scope, ()):
            if principal not in binding.members:
                continue
            if permission not in ROLES.get(binding.role, frozenset()):
                continue
            if holds(binding.expression, resource):
                return True
    return False


def from_pubsub(policy: object) -> list[Binding]:
    """Bindings of a ``google.iam.v1`` ``Policy`` message."""
    return [
        Binding(b.role, frozenset(b.members), b.condition.expression)
        for b in policy.bindings  # type: ignore[attr-defined]
    ]


def from_bucket(policy: Mapping[str, object]) -> list[Binding]:
    """Bindings of a stored JSON bucket policy (``FakeGcsServer``)."""
    found = []
    for b in policy.get("bindings", []):  # type: ignore[attr-defined]
        condition = b.get("condition") or {}
        found.append(Binding(b["role"], frozenset(b["members"]), condition.get("expression", "")))
    return found
