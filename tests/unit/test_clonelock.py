"""The clone lock within one process: threads, re-entry, the token, the bounded wait.

Two ``CloneLock`` objects on one file are two open file descriptions, which flock treats
exactly like two processes; the clock is faked, so nothing here sleeps for real.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from image_updater.errors import GitError, GitUnavailableError
from image_updater.gitops.clonelock import CloneLock


def lock(path: Path, **kwargs: object) -> CloneLock:
    return CloneLock(path, what="the test clone", **kwargs)  # type: ignore[arg-type]


def test_changed_says_whether_another_holder_came_between(tmp_path: Path) -> None:
    path = tmp_path / "clone.lock"
    ours, theirs = lock(path), lock(path)
    steps = []
    for holder in (ours, ours, theirs, ours, ours):
        with holder.hold("a cycle") as changed:
            steps.append(changed)
    # first use: nothing known yet; then unchanged; the other's turn; then changed for us
    assert steps == [True, False, True, True, False]
    assert path.exists() and "(a cycle, since " in path.read_text()


def test_nested_holds_take_the_flock_once(tmp_path: Path) -> None:
    path = tmp_path / "clone.lock"
    outer, other = lock(path), lock(path, timeout=0)
    with outer.hold("the cycle") as first:
        with outer.hold("the sync") as nested:
            assert (first, nested) == (True, False)
        # still held after the inner block ended
        with pytest.raises(GitUnavailableError), other.hold("the other"):
            pass
    with other.hold("the other") as changed:
        assert changed


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    shared = lock(tmp_path / "clone.lock")
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with shared.hold("first"):
            order.append("first in")
            inside.set()
            release.wait(5)
            order.append("first out")

    def second() -> None:
        inside.wait(5)
        with shared.hold("second"):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    inside.wait(5)
    release.set()
    for t in threads:
        t.join(5)
    assert order == ["first in", "first out", "second in"]


def test_a_waiter_logs_the_holder_then_gives_up_at_the_timeout(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    path = tmp_path / "clone.lock"
    holder = lock(path)
    waiter = lock(path, timeout=2.0, poll=0.5, monotonic=lambda: now[0], sleep=sleep)
    with (holder.hold("the daemon's cycle"), caplog.at_level("INFO"),
          pytest.raises(GitUnavailableError) as info, waiter.hold("promote's read")):
        pass
    assert slept == [0.5, 0.5, 0.5, 0.5]
    assert info.value.temporary
    message = str(info.value)
    assert "the daemon's cycle, since " in message and "within 2 s" in message
    assert "promote's read is given up" in message
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1 and "promote's read waits up to 2 s" in logged[0]
    assert "the daemon's cycle" in logged[0]
    with waiter.hold("promote's read"):  # the failed wait left nothing behind
        pass


def test_settings_out_of_range_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        lock(tmp_path / "x.lock", timeout=-1)
    with pytest.raises(ValueError):
        lock(tmp_path / "x.lock", poll=0)


def test_an_unwritable_cache_directory_is_a_git_error_naming_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be")
    held = lock(blocker / "clone.lock")
    with pytest.raises(GitError, match="cache directory writable") as info, held.hold("x"):
        pass
    assert str(blocker / "clone.lock") in str(info.value)
