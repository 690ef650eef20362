"""One working clone, one user at a time: across threads and across processes.

Processes may share ``cache_dir``: ``once`` or ``promote`` run with ``kubectl exec`` in the
daemon's pod use the daemon's clones. Without a lock they meet git's ``index.lock``, read
objects a re-clone just deleted, or delete a clone the other is using.

- ``fcntl.flock`` on a file *beside* the clone, never inside it: a corrupt clone is deleted
  and cloned again, and a lock file inside would go with it while still held.
  The file is never deleted either (a waiter would then lock an orphaned inode).
- flock belongs to an open file description, which all threads of a process share, so it
  cannot tell two threads apart: a ``threading.RLock`` serialises the threads first, and
  only the outermost holder in a process takes and releases the flock.
- The lock file names its holder (pid, host, purpose, since) for a waiter's log line, and
  carries a token: finding another process's token there means the clone changed under
  this process, whose view of it (head, open object readers) must then be dropped.
- Waiting is bounded: after ``timeout`` seconds the caller gets a temporary error and the
  work is retried next cycle. A process that dies releases its flock with its files.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from image_updater.errors import GitError, GitUnavailableError

log = logging.getLogger(__name__)

_MAX_RECORD = 512  # bytes of the holder's record read back; it is one short line


class CloneLock:
    """Re-entrant lock on one clone, held against other threads and other processes."""

    def __init__(self, path: Path, *, what: str, timeout: float = 300.0, poll: float = 0.1,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """
        ``path`` is the lock file; ``what`` names the clone in messages.
        ``timeout`` (seconds) bounds the wait for another process; 0 fails at once.
        ``poll`` (seconds) is how often a waiter tries again.
        """
        if timeout < 0 or poll <= 0:
            raise ValueError("timeout must not be negative and poll must be positive")
        self.path = path
        self.what = what
        self.timeout = timeout
        self.poll = poll
        self._monotonic = monotonic
        self._sleep = sleep
        self._threads = threading.RLock()
        self._depth = 0              # re-entries by the thread holding _threads
        self._fd: int | None = None  # open while this process holds the flock
        self._token: str | None = None  # what this process wrote when it last held it

    @contextmanager
    def hold(self, purpose: str) -> Iterator[bool]:
        """Hold the clone; yields True when another process may have changed it since.

        Nested holds in the same thread yield False: the outermost one already checked.
        """
        with self._threads:
            if self._depth:
                self._depth += 1
                try:
                    yield False
                finally:
                    self._depth -= 1
                return
            changed = self._acquire(purpose)
            self._depth = 1
            try:
                yield changed
            finally:
                self._depth = 0
                self._release()

    def _acquire(self, purpose: str) -> bool:
        fd = self._open()
        try:
            self._wait(fd, purpose)
            previous = os.pread(fd, _MAX_RECORD, 0).decode("utf-8", errors="replace")
            token = secrets.token_hex(8)
            os.ftruncate(fd, 0)
            os.pwrite(fd, _record(token, purpose).encode("utf-8"), 0)
        except BaseException:
            os.close(fd)  # closing also releases the flock if it was taken
            raise
        changed = self._token is None or previous.split(" ", 1)[0] != self._token
        self._fd, self._token = fd, token
        return changed

    def _open(self) -> int:
        # O_CLOEXEC: a git child (GitPython keeps some running) must never inherit the lock.
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise GitError(
                f"The lock file {self.path} of the working clone {self.what} cannot be opened "
                f"({exc.strerror}); make the cache directory writable for image-updater."
            ) from exc

    def _wait(self, fd: int, purpose: str) -> None:
        deadline: float | None = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            now = self._monotonic()
            if deadline is None:
                deadline = now + self.timeout
                if self.timeout > 0:
                    log.info("The working clone %s is in use by %s; %s waits up to %.0f s for it.",
                             self.what, _holder(fd), purpose, self.timeout)
            if now >= deadline:
                raise GitUnavailableError(
                    f"The working clone {self.what} is in use by {_holder(fd)} and was not "
                    f"released within {self.timeout:.0f} s; {purpose} is given up and will be "
                    "retried next cycle. Raise git.lock_timeout if such work takes longer."
                )
            self._sleep(min(self.poll, deadline - now))

    def _release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            # The record stays: the next holder compares its token with its own.
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _record(token: str, purpose: str) -> str:
    since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{token} process {os.getpid()} on {socket.gethostname()} ({purpose}, since {since})\n"


def _holder(fd: int) -> str:
    """Who holds the lock, from the record it wrote (possibly half-written: only logged)."""
    text = os.pread(fd, _MAX_RECORD, 0).decode("utf-8", errors="replace").strip()
    _, _, who = text.partition(" ")
    return who or "another process"
