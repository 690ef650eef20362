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


# ECR tests: appended here (not at the top) so concurrent edits to this file stay separate.
from tests.fixtures.moto import MotoServer  # noqa: E402


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server (ECR, STS) for the session; tests use distinct repository names."""
    with MotoServer() as server:
        yield server
