"""Fakes of the IAM calls ``adapters.gcp.tenant_iam`` makes, at the SDK's boundary: no
emulator here implements IAM (Google's Pub/Sub emulator answers ``UNIMPLEMENTED``).

``FakeIamAdmin``
    ``iam_admin_v1.IAMAsyncClient``'s ``create_service_account`` / ``get_service_account`` /
    ``delete_service_account``: account ids are checked as IAM checks them (6-30 characters,
    ``[a-z][a-z0-9-]*[a-z0-9]``; else ``InvalidArgument``), a second create is
    ``AlreadyExists``, deleting a missing one ``NotFound``. ``calls`` records every call.

``FakePubSubIam``
    The IAM mixin of ``PublisherAsyncClient`` / ``SubscriberAsyncClient``
    (``get_iam_policy`` / ``set_iam_policy`` with ``google.iam.v1`` messages) for topics and
    subscriptions. Whether the resource exists is asked of the real Pub/Sub emulator
    (``exists``), so a grant on a deleted subscription is ``NotFound`` as on Google; a
    deleted resource's policy goes with it. Policies carry an etag; a write with a stale one
    is ``Aborted``, as Pub/Sub answers it. ``calls`` records (method, resource).

Bucket policies are served by ``FakeGcsServer`` (``fakes.py``) for the real storage client.

Limits: no permission checks of the caller, no propagation delay of new accounts, no
policy size limits, no audit configs.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import iam_admin_v1
from google.iam.v1 import iam_policy_pb2, policy_pb2  # type: ignore[import-untyped]

_ACCOUNT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")


class _Transport:
    closed = False

    async def close(self) -> None:
        self.closed = True


class FakeIamAdmin:
    def __init__(self) -> None:
        self.transport = _Transport()
        self.accounts: dict[str, iam_admin_v1.ServiceAccount] = {}  # e-mail -> account
        self.calls: list[tuple[str, str]] = []

    async def create_service_account(
        self, *, request: iam_admin_v1.CreateServiceAccountRequest, **_: Any
    ) -> iam_admin_v1.ServiceAccount:
        self.calls.append(("create_service_account", request.account_id))
        if not _ACCOUNT_ID.fullmatch(request.account_id):
            raise gexc.InvalidArgument(f"invalid account id {request.account_id!r}")
        project = request.name.removeprefix("projects/")
        email = f"{request.account_id}@{project}.iam.gserviceaccount.com"
        if email in self.accounts:
            raise gexc.AlreadyExists(f"{email} exists")
        account = iam_admin_v1.ServiceAccount(
            name=f"projects/{project}/serviceAccounts/{email}",
            project_id=project,
            email=email,
            display_name=request.service_account.display_name,
            description=request.service_account.description,
        )
        self.accounts[email] = account
        return account

    async def get_service_account(
        self, *, request: iam_admin_v1.GetServiceAccountRequest, **_: Any
    ) -> iam_admin_v1.ServiceAccount:
        self.calls.append(("get_service_account", request.name))
        email = request.name.rsplit("/", 1)[-1]
        if email not in self.accounts:
            raise gexc.NotFound(f"{request.name} not found")
        return self.accounts[email]

    async def delete_service_account(
        self, *, request: iam_admin_v1.DeleteServiceAccountRequest, **_: Any
    ) -> None:
        self.calls.append(("delete_service_account", request.name))
        email = request.name.rsplit("/", 1)[-1]
        if self.accounts.pop(email, None) is None:
            raise gexc.NotFound(f"{request.name} not found")


class FakePubSubIam:
    def __init__(self, exists: Callable[[str], Awaitable[bool]]) -> None:
        self._exists = exists
        self.policies: dict[str, policy_pb2.Policy] = {}
        self.calls: list[tuple[str, str]] = []
        self._etags = 0

    async def _check(self, resource: str) -> None:
        if not await self._exists(resource):
            self.policies.pop(resource, None)  # deleted with its resource
            raise gexc.NotFound(f"{resource} not found")

    async def get_iam_policy(
        self, *, request: iam_policy_pb2.GetIamPolicyRequest, **_: Any
    ) -> policy_pb2.Policy:
        self.calls.append(("get_iam_policy", request.resource))
        await self._check(request.resource)
        policy = policy_pb2.Policy()
        policy.CopyFrom(self.policies.get(request.resource, policy_pb2.Policy(etag=b"e0")))
        return policy

    async def set_iam_policy(
        self, *, request: iam_policy_pb2.SetIamPolicyRequest, **_: Any
    ) -> policy_pb2.Policy:
        self.calls.append(("set_iam_policy", request.resource))
        await self._check(request.resource)
        current = self.policies.get(request.resource, policy_pb2.Policy(etag=b"e0"))
        if request.policy.etag and request.policy.etag != current.etag:
            raise gexc.Aborted("the policy changed: read it again")
        self._etags += 1
        stored = policy_pb2.Policy()
        stored.CopyFrom(request.policy)
        stored.etag = f"e{self._etags}".encode()
        self.policies[request.resource] = stored
        return stored

    def bindings(self) -> dict[str, policy_pb2.Policy]:
        return dict(self.policies)

    async def prune(self) -> None:
        """Forget the policies of resources deleted meanwhile (Google deletes them with it)."""
        for resource in list(self.policies):
            if not await self._exists(resource):
                del self.policies[resource]
