"""A small evaluator of the IAM policy documents in ``deploy/aws`` (a test helper).

moto does not enforce IAM on the calls the tests make, and no library here answers "may
this principal do this action on this resource" for a policy document, so the isolation
tests resolve the templates' documents (``resolve``: ``Ref``, ``Fn::Sub``, ``Fn::GetAtt``,
``Fn::If`` on given values) and evaluate them (``allowed``) the way IAM does for one
identity policy set: an explicit ``Deny`` wins, else an ``Allow`` whose ``Action``,
``Resource`` and ``Condition`` all match, else denied.

Covered: ``Action`` / ``Resource`` as a string or list with ``*`` and ``?`` wildcards
(actions case-insensitively), ``NotAction`` / ``NotResource``, and the condition operators
``StringEquals``, ``StringLike``, ``ArnEquals``, ``ArnLike`` (a missing key fails the
condition). Not covered (unused by the templates): policy variables, ``...IfExists``,
``ForAnyValue``/``ForAllValues``, resource policies, permission boundaries, SCPs.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import Any

_SUB = re.compile(r"\$\{([^}]+)\}")


def resolve(value: Any, names: Mapping[str, str]) -> Any:
    """``value`` with the intrinsic functions replaced by ``names`` (``Ref`` and
    ``Fn::Sub`` names, ``Logical.Attribute`` for ``Fn::GetAtt``, conditions by name)."""
    if isinstance(value, list):
        return [resolve(v, names) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        return names[value["Ref"]]
    if set(value) == {"Fn::GetAtt"}:
        target = value["Fn::GetAtt"]
        return names[target if isinstance(target, str) else ".".join(target)]
    if set(value) == {"Fn::Sub"}:
        return _SUB.sub(lambda m: names[m.group(1)], value["Fn::Sub"])
    if set(value) == {"Fn::If"}:
        condition, yes, no = value["Fn::If"]
        return resolve(yes if names[condition] == "true" else no, names)
    return {k: resolve(v, names) for k, v in value.items()}


def _listed(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _matches(patterns: str | Sequence[str], value: str, *, fold: bool = False) -> bool:
    if fold:
        return any(fnmatch.fnmatchcase(value.lower(), p.lower()) for p in _listed(patterns))
    return any(fnmatch.fnmatchcase(value, p) for p in _listed(patterns))


def _condition_holds(
    condition: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]
) -> bool:
    for operator, tests in condition.items():
        for key, wanted in tests.items():
            actual = context.get(key)
            if actual is None:
                return False
            if operator in ("StringEquals", "ArnEquals"):
                ok = actual in _listed(wanted)
            elif operator in ("StringLike", "ArnLike"):
                ok = _matches(wanted, actual)
            else:
                raise AssertionError(f"condition operator {operator} is not evaluated here")
            if not ok:
                return False
    return True


def _applies(
    statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str]
) -> bool:
    if "Action" in statement and not _matches(statement["Action"], action, fold=True):
        return False
    if "NotAction" in statement and _matches(statement["NotAction"], action, fold=True):
        return False
    if "Resource" in statement and not _matches(statement["Resource"], resource):
        return False
    if "NotResource" in statement and _matches(statement["NotResource"], resource):
        return False
    return _condition_holds(statement.get("Condition", {}), context)


def allowed(
    documents: Sequence[Mapping[str, Any]],
    action: str,
    resource: str,
    context: Mapping[str, str] | None = None,
) -> bool:
    """Whether the identity holding ``documents`` may do ``action`` on ``resource``."""
    statements = [s for d in documents for s in _listed_statements(d)]
    ctx = context or {}
    if any(s["Effect"] == "Deny" and _applies(s, action, resource, ctx) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and _applies(s, action, resource, ctx) for s in statements)


def _listed_statements(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    statements = document["Statement"]
    return [statements] if isinstance(statements, dict) else list(statements)
