"""Shared fixtures. Servers are real processes on 127.0.0.1, started and stopped here.

Every test is also checked for leaks (see :func:`no_leaked_threads_or_tasks`): a thread it
started that is still running after a short grace period, or an asyncio task still pending
when the coroutine given to ``asyncio.run`` returned, fails the test. ``asyncio.run`` would
silently cancel such a task, hiding work the code under test forgot to await or stop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import pytest

from tests.fixtures.registry import RegistryServer

T = TypeVar("T")

#: How long a test's threads and tasks get to finish on their own before they count as leaked.
LEAK_GRACE_SECONDS = 2.0


@pytest.fixture(autouse=True)
def no_leaked_log_handlers() -> Iterator[None]:
    """A test that runs the CLI in-process (``main([...])``) installs the CLI's log handler on
    the root logger, writing to the stream pytest captured for that test. Left there, a later
    test's daemon thread logs into that closed stream ("--- Logging error ---"). Remove what
    the test added; pytest's own capture handlers are pytest's to remove."""
    root = logging.getLogger()
    before = set(root.handlers)
    yield
    for handler in set(root.handlers) - before:
        if type(handler).__module__.startswith("_pytest"):
            continue
        root.removeHandler(handler)
        handler.close()


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


# --- leak checks ----------------------------------------------------------------------------

_leaked_tasks: list[str] = []
_leaked_tasks_lock = threading.Lock()


class _LeakTrackingLoop(asyncio.SelectorEventLoop):
    """Records the tasks still pending when a ``run_until_complete`` call returns.

    ``asyncio.run`` calls ``run_until_complete`` once for the main coroutine, then again to
    cancel whatever is left; the first return is the moment a leak is visible.
    """

    def run_until_complete(self, future: Awaitable[T]) -> T:
        result = super().run_until_complete(future)
        pending = _pending_tasks(self)
        if pending:  # a grace period for tasks that are finishing on their own
            super().run_until_complete(asyncio.wait(pending, timeout=LEAK_GRACE_SECONDS))
            pending = _pending_tasks(self)
        if pending:
            with _leaked_tasks_lock:
                _leaked_tasks.extend(repr(task) for task in pending)
        return result


def _pending_tasks(loop: asyncio.AbstractEventLoop) -> set[asyncio.Task[Any]]:
    return {task for task in asyncio.all_tasks(loop) if not task.done()}


class _LeakTrackingPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _LeakTrackingLoop()


def pytest_configure(config: pytest.Config) -> None:
    # Every asyncio.run() in tests and in the code they call gets a tracking loop.
    asyncio.set_event_loop_policy(_LeakTrackingPolicy())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``-m "not integration"`` must really leave out every test that starts a server."""
    unmarked = sorted({str(item.path.relative_to(config.rootpath)) for item in items
                       if "integration" in item.path.parts
                       and item.get_closest_marker("integration") is None})
    if unmarked:
        raise pytest.UsageError(
            "These integration test modules lack the integration marker; add "
            "'pytestmark = pytest.mark.integration' after their imports: " + ", ".join(unmarked))


@pytest.fixture(autouse=True)
def no_leaked_threads_or_tasks() -> Iterator[None]:
    """Fail a test that leaves threads running or asyncio tasks pending.

    Threads alive before the test (session- and module-scoped servers, pytest's own) are
    allowed; the test's function-scoped fixtures are torn down before this check runs.
    """
    before = set(threading.enumerate())
    with _leaked_tasks_lock:
        _leaked_tasks.clear()
    yield
    threads = _threads_still_running(before)
    with _leaked_tasks_lock:
        tasks = list(_leaked_tasks)
        _leaked_tasks.clear()
    problems = [f"thread {t.name!r} ({t!r})" for t in threads]
    problems += [f"asyncio task {task}" for task in tasks]
    if problems:
        pytest.fail("The test leaked (still running after a "
                    f"{LEAK_GRACE_SECONDS:.0f} s grace period; stop or await it):\n  "
                    + "\n  ".join(problems), pytrace=False)


def _threads_still_running(before: set[threading.Thread]) -> list[threading.Thread]:
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    new = [t for t in threading.enumerate() if t not in before]
    for thread in new:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    return [t for t in new if t.is_alive()]
