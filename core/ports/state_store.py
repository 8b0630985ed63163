"""StateStore port: versioned JSON items with compare-and-set.

Items live in ``table`` / ``partition`` / ``key`` (DynamoDB pk+sk, Table storage
PartitionKey+RowKey, Firestore collection/document). Every write is conditional:
``create`` fails with ``Conflict`` if the key exists, ``replace`` and ``delete`` fail with
``Conflict`` unless the stored version equals ``item.version``. That is what lets several
conductor instances run at once.

Encoding (one rule, here, for every adapter)
    Every adapter stores an item's ``data`` as the text ``encode_data`` returns: JSON with
    sorted keys (at every depth), no spaces, non-ASCII characters escaped (so its length in
    characters is its length in bytes, on Table storage's UTF-16 as on UTF-8 backends), and
    NaN / Infinity refused with ``InvalidRequest`` -- JSON has no such numbers, DynamoDB and
    Firestore would refuse them, so a record that works locally works in every cloud. The
    size limit (``max_bytes``) is the adapter's (``capabilities.max_item_bytes``).
    ``decode_data`` reads it back; ``tests/contract/test_state_store.py`` checks that every
    backend refuses NaN and reads back the same key order whatever order was written.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from core.errors import Conflict, InvalidRequest


@dataclass(frozen=True, slots=True)
class Item:
    table: str
    partition: str
    key: str
    data: Mapping[str, Any]
    version: int
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StateCapabilities:
    max_item_bytes: int
    native_ttl: bool


def _non_finite_path(value: Any, path: str = "data") -> str | None:
    """Where in ``value`` a NaN or Infinity sits (``data.a[2]``), if anywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, Mapping):
        for key, inner in value.items():
            found = _non_finite_path(inner, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list | tuple):
        for index, inner in enumerate(value):
            found = _non_finite_path(inner, f"{path}[{index}]")
            if found:
                return found
    return None


def encode_data(data: Mapping[str, Any], *, max_bytes: int) -> str:
    """The canonical JSON text of an item's data (see the module docstring);
    ``InvalidRequest`` for NaN / Infinity, what JSON cannot hold, or more than ``max_bytes``."""
    try:
        encoded = json.dumps(
            dict(data), separators=(",", ":"), sort_keys=True, ensure_ascii=True, allow_nan=False
        )
    except ValueError as exc:
        where = _non_finite_path(data)
        if where is None:
            raise InvalidRequest(f"item data is not JSON: {exc}") from exc
        raise InvalidRequest(
            f"item data holds NaN or Infinity at {where}: JSON has neither"
        ) from exc
    except TypeError as exc:
        raise InvalidRequest(f"item data is not JSON: {exc}") from exc
    if len(encoded) > max_bytes:  # ASCII only: characters are bytes
        raise InvalidRequest(f"item larger than {max_bytes} bytes of JSON ({len(encoded)})")
    return encoded


def written(data: Mapping[str, Any]) -> dict[str, Any]:
    """The data of an item just written, for the ``Item`` a write returns: what was given, not
    parsed back from its JSON (that parse was a tenth of a routing decision's time,
    ``bench/routing_bench.py``). It reads back equal when given in JSON form (lists, string
    keys), as the core always writes it (``core.models.dump``)."""
    return dict(data)


def decode_data(encoded: str) -> dict[str, Any]:
    """The data ``encode_data`` wrote (an empty text is an empty item)."""
    data: dict[str, Any] = json.loads(encoded) if encoded else {}
    return data


class StateStore(Protocol):
    capabilities: StateCapabilities

    async def get(self, *, table: str, partition: str, key: str) -> Item | None: ...

    async def create(
        self,
        *,
        table: str,
        partition: str,
        key: str,
        data: Mapping[str, Any],
        expires_at: datetime | None = None,
    ) -> Item:
        """Insert a new item at version 1; ``Conflict`` if the key exists."""
        ...

    async def replace(
        self, *, item: Item, data: Mapping[str, Any], expires_at: datetime | None = None
    ) -> Item:
        """Overwrite if still at ``item.version``; returns the item at the next version."""
        ...

    async def delete(self, *, item: Item) -> None:
        """Delete if still at ``item.version``; ``Conflict`` otherwise (missing included)."""
        ...

    async def query(
        self, *, table: str, partition: str, limit: int | None = None, after: str | None = None
    ) -> list[Item]:
        """Items of one partition in key order, starting after key ``after``."""
        ...

    async def scan(self, *, table: str) -> list[Item]:
        """Every item of a table (housekeeping only)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Replace:
    """``StateStore.replace(item=item, data=data, expires_at=expires_at)``, as one write of
    ``write_chains``."""

    item: Item
    data: Mapping[str, Any]
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """``StateStore.delete(item=item)``, as one write of ``write_chains``."""

    item: Item


Write = Replace | Delete


def stale(item: Item) -> Conflict:
    """What a replace or delete of ``item`` that lost its compare-and-set raises: the item
    is no longer at ``item.version`` (written since, deleted or expired)."""
    return Conflict(f"{item.table}/{item.partition}/{item.key} is not at v{item.version}")


#: What one write came to: the item as replaced, None for a delete, or the error that
#: ``replace`` / ``delete`` raised (``Conflict``: a lost compare-and-set).
Written = Item | Exception | None


class GroupCommit(Protocol):
    """A store that commits several writes at once (optional: see ``write_chains``)."""

    async def write_chains(self, *, chains: Sequence[Sequence[Write]]) -> list[list[Written]]:
        """``write_chains`` below, every write in one transaction: after a crash, all the
        writes it made or none. Fails as a whole (nothing stored) rather than with the
        error of one write.

        A store whose service bounds a transaction says in its module docstring which
        groups it commits at once, and does one of two things with the others (the
        results are one by one's either way):

        * makes them one by one (``write_one_by_one``: an error is that of its write, no
          promise across writes) -- Firestore beyond 500 writes, 10 MiB or a document twice;
        * or commits them in several transactions, each all or nothing -- Table storage,
          whose transactions hold one partition. An error before the first of them has
          committed fails the group as a whole, as above; after that, it is the result of
          each write the failed transaction carried, ending those chains, as one by one
          reports it. A crash in between leaves the transactions that committed.

        Chains are independent and a caller reads each write's result, so either way it
        can redo what did not happen: no caller may count on one chain's writes being
        stored with another's."""
        ...


async def write_chains(store: StateStore, chains: Sequence[Sequence[Write]]) -> list[list[Written]]:
    """Apply each chain's writes in order, as ``replace`` / ``delete`` would, until one of
    them fails -- a ``Conflict``, or any other error -- (its later writes are not tried); the
    chains are independent of each other. Returns, per chain, what each write it tried came
    to (shorter than the chain when a failure stopped it). Exactly what calling ``replace``
    / ``delete`` in that order does -- and that is what a store without ``GroupCommit``
    does. A ``GroupCommit`` store makes them one commit instead of one each (SQLite,
    ``bench/routing_bench.py``; PostgreSQL; Firestore within its limits), or
    a few (Table storage: one per partition and step); an error raised there other than a lost
    compare-and-set stored nothing, so the caller may try the writes again one by one."""
    # ``getattr``, not ``isinstance(store, GroupCommit)``: a runtime protocol check cost
    # 27 us here, against 0.1 us (the store's write itself costs ~40 us)
    group = getattr(store, "write_chains", None)
    if group is not None and sum(len(chain) for chain in chains) > 1:
        grouped: list[list[Written]] = await group(chains=chains)
        return grouped
    return await write_one_by_one(store, chains)


async def write_one_by_one(
    store: StateStore, chains: Sequence[Sequence[Write]]
) -> list[list[Written]]:
    """``write_chains`` without a group: each chain's ``replace`` / ``delete`` in turn,
    stopping at its first failure (what a ``GroupCommit`` store falls back to for a group
    its service cannot commit at once). The chains are independent, so they run at the same
    time: a batch of n one-write chains takes one round trip of the store, not n -- how
    DynamoDB serves a routing batch (a ``TransactWriteItems`` would bill each write twice)."""
    if len(chains) == 1:
        return [await _write_chain(store, chains[0])]
    return list(await asyncio.gather(*(_write_chain(store, chain) for chain in chains)))


async def _write_chain(store: StateStore, chain: Sequence[Write]) -> list[Written]:
    done: list[Written] = []
    for write in chain:
        try:
            if isinstance(write, Replace):
                done.append(
                    await store.replace(
                        item=write.item, data=write.data, expires_at=write.expires_at
                    )
                )
            else:
                await store.delete(item=write.item)
                done.append(None)
        except Exception as exc:  # a Conflict, or an error of that write alone
            done.append(exc)
            break
    return done
