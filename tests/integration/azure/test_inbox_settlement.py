"""The Azure inbox trigger maps the core's outcome (``core.inbox.settle``) onto the platform:
an undecodable message is dead-lettered at once (Service Bus: the message's own settlement;
Storage queues: ``<queue>-poison`` on Azurite), a ``Retryable`` failure raises so the host
delivers the message again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import azure.functions as func
import pytest

from adapters.azure.settings import AzureSettings
from adapters.azure.storage_queue_wire import encode_envelope
from core.errors import Retryable
from core.inbox import Settlement
from core.ports import Queue, dead_letter_queue
from core.ports.message_bus import DEAD_LETTER_REASON, DEAD_LETTER_SOURCE
from core.settings import SkycrawlSettings
from functions.azure import bootstrap, function_app
from functions.azure.bootstrap import AzureStack

SERVICEBUS = (
    "Endpoint=sb://example.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=c2VjcmV0"
)


class RecordingActions:
    """What ``ServiceBusMessageActions`` is asked to do."""

    def __init__(self) -> None:
        self.dead: list[tuple[Any, str | None]] = []

    def deadletter(
        self,
        message: Any,
        deadletter_reason: str | None = None,
        deadletter_error_description: str | None = None,
    ) -> None:
        self.dead.append((message, deadletter_reason))


async def _installed(settings: SkycrawlSettings, azure: AzureSettings) -> AsyncIterator[AzureStack]:
    stack = bootstrap.build_stack(settings, azure)
    bootstrap.use_stack(stack)
    try:
        yield stack
    finally:
        bootstrap.use_stack(None)
        await stack.close()


@pytest.fixture
async def queue_stack(connection_string: str) -> AsyncIterator[AzureStack]:
    tag = uuid.uuid4().hex[:8]
    settings = SkycrawlSettings(provider="azure", inbox_queue=f"inbox-{tag}")
    azure = AzureSettings(
        bus="storage-queue", storage_connection_string=connection_string, state_table=f"s{tag}"
    )
    async for stack in _installed(settings, azure):
        await stack.prepare()
        yield stack


@pytest.fixture
async def servicebus_stack(connection_string: str) -> AsyncIterator[AzureStack]:
    tag = uuid.uuid4().hex[:8]
    settings = SkycrawlSettings(provider="azure", inbox_queue=f"inbox-{tag}")
    azure = AzureSettings(
        servicebus_connection_string=SERVICEBUS,
        storage_connection_string=connection_string,
        state_table=f"s{tag}",
    )
    async for stack in _installed(settings, azure):
        yield stack


def _broken(monkeypatch: pytest.MonkeyPatch, stack: AzureStack) -> list[bytes]:
    seen: list[bytes] = []

    async def handle_raw(body: bytes) -> None:
        seen.append(body)
        raise Retryable("Table storage is down")

    monkeypatch.setattr(stack.conductor, "handle_raw", handle_raw)
    return seen


async def test_servicebus_dead_letters_an_undecodable_message_by_its_settlement(
    servicebus_stack: AzureStack,
) -> None:
    message, actions = func.ServiceBusMessage(body=b"not json"), RecordingActions()
    outcome = await function_app.settle_servicebus(message, b"not json", 1, actions)
    assert outcome.settlement is Settlement.dead_letter
    [(settled, reason)] = actions.dead
    assert settled is message
    assert reason is not None
    assert reason.startswith("undecodable inbox message")


async def test_servicebus_without_settlement_retries_until_the_host_dead_letters(
    servicebus_stack: AzureStack,
) -> None:
    with pytest.raises(function_app.RetryLater, match="undecodable inbox message"):
        await function_app.settle_servicebus(None, b"not json", 1, None)


async def test_servicebus_raises_for_a_retryable_failure(
    servicebus_stack: AzureStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen, actions = _broken(monkeypatch, servicebus_stack), RecordingActions()
    with pytest.raises(function_app.RetryLater, match="Table storage is down"):
        await function_app.settle_servicebus(None, b"{}", 2, actions)
    assert seen == [b"{}"]
    assert actions.dead == []


async def test_storage_queue_moves_an_undecodable_message_to_poison(
    queue_stack: AzureStack,
) -> None:
    inbox = queue_stack.settings.inbox_queue
    text = encode_envelope("m1", b"not json", {}).encode()
    message = func.QueueMessage(id="m1", body=text)
    await function_app.inbox_storage_queue_handler(message)
    [dead] = await queue_stack.ports.bus.receive(source=Queue(dead_letter_queue(inbox)))
    assert dead.body == b"not json"
    assert dead.attributes[DEAD_LETTER_REASON].startswith("undecodable inbox message")
    assert dead.attributes[DEAD_LETTER_SOURCE] == inbox


async def test_storage_queue_raises_for_a_retryable_failure(
    queue_stack: AzureStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _broken(monkeypatch, queue_stack)
    text = encode_envelope("m2", b"{}", {}).encode()
    with pytest.raises(function_app.RetryLater):
        await function_app.inbox_storage_queue_handler(func.QueueMessage(id="m2", body=text))
    assert seen == [b"{}"]
    inbox = queue_stack.settings.inbox_queue
    assert await queue_stack.ports.bus.receive(source=Queue(dead_letter_queue(inbox))) == []
