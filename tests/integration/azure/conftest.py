"""Fixtures of the Azure integration tests: Azurite for the session, and fresh fakes."""

from __future__ import annotations

import pytest

from core.clock import FakeClock, SystemClock
from tests.integration.azure.azurite import Azurite, azurite_server
from tests.integration.azure.fakes import FakeServiceBusNamespace

__all__ = ["azurite_server"]


@pytest.fixture
def connection_string(azurite_server: Azurite) -> str:
    return azurite_server.connection_string


@pytest.fixture
def namespace() -> FakeServiceBusNamespace:
    """A fake Service Bus namespace on a fake clock."""
    return FakeServiceBusNamespace(FakeClock())


@pytest.fixture
def wall_namespace() -> FakeServiceBusNamespace:
    """A fake Service Bus namespace on the wall clock (lock renewal, delayed release)."""
    return FakeServiceBusNamespace(SystemClock())
