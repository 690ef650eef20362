"""Shared fixtures. Servers are real processes on 127.0.0.1, started and stopped here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.registry import RegistryServer


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    """One anonymous registry for the session; tests use distinct repository names."""
    with RegistryServer() as server:
        yield server


@pytest.fixture
def fresh_registry() -> Iterator[RegistryServer]:
    """A registry of the test's own, for tests that count requests in its access log."""
    with RegistryServer() as server:
        yield server
