"""``DynamoStateStore.write_chains`` beyond the contract suite: which calls a group makes
(moto accepts requests DynamoDB would refuse -- more than 4 MB, no token -- so the requests
are checked here, as botocore sends them), what it does with a group no transaction can
hold, and how a cancellation that is not a lost compare-and-set surfaces."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from adapters.aws.state_store import (
    MAX_TRANSACTION_ACTIONS,
    DynamoStateStore,
    _conditions_failed,
)
from core.clock import FakeClock
from core.errors import Conflict, Retryable
from core.ports import Item
from core.ports.state_store import Delete, Replace, write_chains
from tests.contract.backends_aws import create_state_table
from tests.integration.aws.moto_server import client, unique


@pytest.fixture
async def recorded(moto_endpoint: str) -> AsyncIterator[tuple[DynamoStateStore, list[Any]]]:
    """A store whose client records every DynamoDB call: (operation, parameters)."""
    table = unique("state")
    create_state_table(table)
    dynamodb = client("dynamodb")
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        calls.append((model.name, params))

    dynamodb.meta.events.register("provide-client-params.dynamodb.*", record)
    store = DynamoStateStore(dynamodb=dynamodb, table=table, clock=FakeClock())
    yield store, calls
    await store.close()


async def _items(store: DynamoStateStore, calls: list[Any], *keys: str) -> list[Item]:
    made = [await store.create(table="t", partition="p", key=k, data={"n": 1}) for k in keys]
    calls.clear()
    return made


async def test_a_group_is_one_transaction_and_a_conflict_one_more(
    recorded: tuple[DynamoStateStore, list[Any]],
) -> None:
    store, calls = recorded
    a, b, c, d, _ = await _items(store, calls, "a", "b", "c", "d", "e")
    stale = Item("t", "p", "e", {"n": 1}, 7)
    done = await write_chains(
        store,
        [[Replace(a, {"n": 2}), Delete(b)], [Delete(stale), Replace(d, {"n": 2})], [Delete(c)]],
    )
    (a2, b_gone), (lost,), (c_gone,) = done
    assert isinstance(a2, Item)
    assert a2.version == 2
    assert b_gone is None
    assert c_gone is None
    assert isinstance(lost, Conflict)
    # the first transaction is cancelled by the stale delete; the second is the group
    # without it and without the write after it in its chain
    assert [name for name, _ in calls] == ["TransactWriteItems", "TransactWriteItems"]
    first, second = (params for _, params in calls)
    assert [next(iter(action)) for action in first["TransactItems"]] == [
        "Put",
        "Delete",
        "Delete",
        "Put",
        "Delete",
    ]
    assert [next(iter(action)) for action in second["TransactItems"]] == ["Put", "Delete", "Delete"]
    for action in first["TransactItems"]:
        (request,) = action.values()
        assert request["TableName"] == store._table
        assert request["ConditionExpression"].startswith("#ver = :ver")
    assert first["ClientRequestToken"] != second["ClientRequestToken"]
    assert await store.get(table="t", partition="p", key="d") == d  # not tried
    assert await store.get(table="t", partition="p", key="b") is None


async def test_groups_beyond_one_transaction_go_one_by_one(
    recorded: tuple[DynamoStateStore, list[Any]],
) -> None:
    store, calls = recorded
    many = await _items(store, calls, *(f"k{n:03}" for n in range(MAX_TRANSACTION_ACTIONS + 1)))
    done = await write_chains(store, [[Replace(item, {"n": 2})] for item in many])
    assert all(isinstance(result, Item) for (result,) in done)
    assert {name for name, _ in calls} == {"PutItem"}
    # the same item twice (a replace and then a delete of what it wrote): one by one, in order
    (a,) = await _items(store, calls, "a")
    replaced = Item("t", "p", "a", {"n": 2}, 2)
    done = await write_chains(store, [[Replace(a, {"n": 2}), Delete(replaced)]])
    assert [type(result) for result in done[0]] == [Item, type(None)]
    assert [name for name, _ in calls] == ["PutItem", "DeleteItem"]
    # more than 4 MB of items
    big = await _items(store, calls, *(f"big{n:02}" for n in range(12)))
    payload = {"text": "x" * 340_000}
    done = await write_chains(store, [[Replace(item, payload)] for item in big])
    assert all(isinstance(result, Item) for (result,) in done)
    assert {name for name, _ in calls} == {"PutItem"}


def _cancelled(*codes: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
            "CancellationReasons": [{"Code": code} for code in codes],
        },
        "TransactWriteItems",
    )


def test_only_lost_conditions_are_conflicts() -> None:
    assert _conditions_failed(_cancelled("None", "ConditionalCheckFailed", "None"), 3) == [1]
    with pytest.raises(Retryable):  # another transaction held an item: nothing stored
        _conditions_failed(_cancelled("ConditionalCheckFailed", "TransactionConflict"), 2)
    with pytest.raises(ClientError):  # a bug, raised as such: nothing stored
        _conditions_failed(_cancelled("ConditionalCheckFailed", "ValidationError"), 2)
    with pytest.raises(ClientError):  # reasons that do not match the request
        _conditions_failed(_cancelled("ConditionalCheckFailed"), 2)
