"""``status_page:`` settings: who may read the status page and ``/api/v1/status``, and how
fresh it is. Parsed by :mod:`image_updater.config.settings` (the key-by-key type check) and
checked here for what types cannot say."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from image_updater.config.fields import _position
from image_updater.errors import ConfigError

ACCESS = ("open", "authenticated")


@dataclass(frozen=True, kw_only=True)
class StatusPageSettings:
    """What ``GET /`` and ``GET /api/v1/status`` show, and to whom."""

    #: ``open``: anyone who reaches the port (the cluster network) may read it;
    #: ``authenticated``: only the identities the promotion API accepts
    access: str = "open"
    #: seconds between the page's self-refreshes in the browser
    reload_seconds: int = 30
    #: seconds after which a page read asks for a new snapshot even when no cycle ran
    #: (holds and releases pushed to git between cycles show up then); 0: only after cycles
    max_age: float = 300.0
    #: recent changes shown per app below the table (each app: one bounded ``git log``)
    history: int = 5


def check_status_page(block: StatusPageSettings, node: Any, where: str, *,
                      identities: bool = True) -> None:
    """Refuse values that parse but make no sense, naming ``file:line:column`` and the key.

    ``node`` is the parsed ``status_page:`` mapping (positions for the messages), or None;
    ``identities``: the ``api`` block configures some (``access: authenticated`` needs them,
    and ``validate --config`` should say so, not only the daemon's start).
    """
    problems = []
    if block.access not in ACCESS:
        problems.append(("access", f"{block.access!r} is not known; use one of "
                                   f"{', '.join(ACCESS)}"))
    elif block.access == "authenticated" and not identities:
        problems.append(("access", "'authenticated' needs identities to check, and the api "
                                   "block has none: configure api.tokens or "
                                   "api.service_accounts, or set access: open"))
    if block.reload_seconds < 1:
        problems.append(("reload_seconds", f"must be at least 1 (seconds between the page's "
                                           f"reloads), not {block.reload_seconds}"))
    if block.max_age < 0:
        problems.append(("max_age", f"must be 0 (only after cycles) or more seconds, not "
                                    f"{block.max_age:g}"))
    if not 0 <= block.history <= 100:
        problems.append(("history", f"must be between 0 and 100 changes per app, not "
                                    f"{block.history}"))
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in settings file {where}:\n"
                          + "\n".join(f"  {_at(node, key, where)}: status_page.{key}: {why}"
                                       for key, why in problems))


def _at(node: Any, key: str, where: str) -> str:
    line, column = _position(node, key) if node is not None else (0, 0)
    return f"{where}:{line}:{column}" if line else where
