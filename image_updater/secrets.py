"""Secrets: the one way they are read, and the registry of values that must never be shown.

Every secret the settings point at (registry passwords and docker configs, forge tokens and
the GitHub App key, the git token, the webhook secret) is read by :func:`read_secret_file`
or :func:`read_secret_env`, with one rule:

- it is read at each use, never cached here, so a rotated Kubernetes secret or an edited
  file takes effect without a restart;
- trailing line endings are removed: every ``\\n`` and ``\\r`` at the very end (what
  ``echo``, editors and ``kubectl create secret --from-file`` leave behind). Nothing else
  is removed: leading characters, spaces and tabs, and line breaks inside are part of the
  value (a component that cannot use them says so itself);
- a missing or unreadable file, an unset variable, or a value that is empty after that
  stripping raises :class:`~image_updater.errors.ConfigError` naming the file or
  variable, the setting that names it, and how to fix it; never the value;
- the value read is added to the :class:`SecretRegistry` passed in, so a log line or a
  printed result that contains it is masked from then on.

There is no module-level registry: the CLI creates one, hands it to ``configure_logging``
and, through the runtime, to every credential source.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from image_updater.errors import ConfigError

MASK = "***"


class SecretRegistry:
    """The secret values that must never be printed. Thread-safe; shared by reference.

    Values shorter than ``min_length`` are not registered: masking a three-letter string
    everywhere would garble every line while protecting nothing worth having.
    """

    def __init__(self, values: Iterable[str] = (), *, min_length: int = 4) -> None:
        self._lock = threading.Lock()
        self._min_length = min_length
        self._values: tuple[str, ...] = ()
        for value in values:
            self.add(value)

    def add(self, value: str) -> None:
        value = value.strip()
        if len(value) < self._min_length:
            return
        with self._lock:
            if value not in self._values:
                # longest first, so a secret that contains another one is masked whole
                self._values = tuple(sorted((*self._values, value), key=len, reverse=True))

    def __len__(self) -> int:
        return len(self._values)

    def mask(self, text: str) -> str:
        for value in self._values:  # reading the tuple needs no lock: it is replaced, not mutated
            text = text.replace(value, MASK)
        return text


def strip_line_endings(text: str) -> str:
    """``text`` without the ``\\n``/``\\r`` characters at its end; nothing else changes."""
    return text.rstrip("\r\n")


def read_secret_file(path: str | Path, *, setting: str, secrets: SecretRegistry) -> str:
    """The secret in ``path`` (named by the settings key ``setting``), per the module rule."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"The secret file {path} (setting {setting}) does not exist; mount the secret "
            f"there or fix {setting}."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        # the exception's own text is left out: a decode error quotes the bytes it read
        raise ConfigError(
            f"The secret file {path} (setting {setting}) cannot be read "
            f"({type(exc).__name__}); check that it is UTF-8 text readable by the "
            "image-updater user."
        ) from None
    return _accepted(strip_line_endings(text), f"The secret file {path} (setting {setting})",
                     "write the secret into it", secrets)


def read_secret_env(name: str, *, setting: str, secrets: SecretRegistry,
                    environ: Mapping[str, str] | None = None) -> str:
    """The secret in environment variable ``name`` (named by ``setting``), per the module rule.

    ``environ`` is the process environment when None (a parameter for tests).
    """
    env = os.environ if environ is None else environ
    if name not in env:
        raise ConfigError(
            f"The environment variable {name} (setting {setting}) is not set; set it to the "
            f"secret, or point {setting} at the variable that holds it."
        )
    return _accepted(strip_line_endings(env[name]),
                     f"The environment variable {name} (setting {setting})",
                     "set it to the secret", secrets)


def _accepted(value: str, where: str, fix: str, secrets: SecretRegistry) -> str:
    if not value:
        raise ConfigError(f"{where} is empty; {fix}.")
    secrets.add(value)
    return value
