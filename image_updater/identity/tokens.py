"""Static bearer tokens: each read from its file, kept only as a SHA-256 hash.

Every presented token is hashed and compared with *every* configured hash in constant time
(:func:`hmac.compare_digest`, no early exit), so neither timing nor the order of the list
tells which token came close. A file is read again when it changes (a rotated Kubernetes
secret), checked at most once per ``recheck`` seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from image_updater.config.api import TokenSettings
from image_updater.errors import ConfigError
from image_updater.secrets import SecretRegistry, read_secret_file


@dataclass
class _Entry:
    settings: TokenSettings
    digest: bytes = b""
    stamp: tuple[int, int] | None = None   # (mtime_ns, size) the digest was read at


class StaticTokens:
    """``clock`` is monotonic seconds (tests pass their own)."""

    def __init__(self, tokens: Sequence[TokenSettings], *, secrets: SecretRegistry,
                 recheck: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries = [_Entry(t) for t in tokens]
        self._secrets = secrets
        self._recheck = recheck
        self._clock = clock
        self._checked = float("-inf")
        self._lock = threading.Lock()
        for entry in self._entries:  # a missing file stops the start, not the first request
            self._load(entry)

    def match(self, presented: str) -> TokenSettings | None:
        """The settings of the token ``presented`` is, or None."""
        self._refresh()
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.digest) and found is None:
                found = entry.settings
        return found

    def _refresh(self) -> None:
        with self._lock:
            now = self._clock()
            if now - self._checked < self._recheck:
                return
            self._checked = now
            for entry in self._entries:
                try:
                    self._load(entry)
                except ConfigError:
                    entry.digest, entry.stamp = b"", None  # a removed token no longer works

    def _load(self, entry: _Entry) -> None:
        path = entry.settings.file
        try:
            info = os.stat(path)
        except OSError as exc:
            raise ConfigError(f"cannot read api.tokens[{entry.settings.name}].file {path} "
                              f"({exc.strerror}); mount the token there or remove the entry."
                              ) from exc
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp == entry.stamp:
            return
        token = read_secret_file(path, setting=f"api.tokens[{entry.settings.name}].file",
                                 secrets=self._secrets).strip()
        if len(token) < 16:
            raise ConfigError(f"api.tokens[{entry.settings.name}].file {path} holds a token "
                              "shorter than 16 characters; generate a long random one, e.g. "
                              "`openssl rand -hex 32`.")
        entry.digest, entry.stamp = hashlib.sha256(token.encode()).digest(), stamp
