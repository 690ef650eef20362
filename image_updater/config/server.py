"""``server``: the limits of the daemon's HTTP port (README, "Configuration reference").

Every field bounds what one client can hold: time to send a request, idle time between
requests, open connections, body size, and how long a shutdown waits for requests in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from image_updater.config.fields import _position
from image_updater.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    #: seconds a client has to send a request's headers and body, counted from its first
    #: byte; then it is answered 408 and the connection is closed (a trickling sender)
    request_timeout: float = 10.0
    #: seconds an idle keep-alive connection stays open between two requests
    keep_alive: float = 5.0
    #: open connections served at once; a request on one more is answered 503 (the
    #: /healthz and /readyz probes are always answered, so an attack does not restart the pod)
    max_connections: int = 100
    #: largest request body, in bytes, of every route but the webhooks
    #: (``webhooks.max_body_bytes``); a larger one is answered 413
    max_body_bytes: int = 1 << 20
    #: seconds a shutdown waits for requests in flight before cancelling them and closing
    shutdown_grace: float = 10.0


#: field -> (smallest value, whether the bound itself is allowed)
_MINIMUM: dict[str, tuple[float, bool]] = {
    "request_timeout": (0, False), "keep_alive": (0, False), "max_connections": (1, True),
    "max_body_bytes": (1, True), "shutdown_grace": (0, True),
}


def check_server(server: ServerSettings, node: Any, where: str) -> None:
    """Raise ConfigError, naming ``file:line:column``, for values no server can run with.

    ``node`` is the parsed ``server:`` mapping (positions for the messages), or None.
    """
    problems = []
    for name, (bound, inclusive) in _MINIMUM.items():
        value = getattr(server, name)
        if value < bound or (value == bound and not inclusive):
            line, column = _position(node, name) if node is not None else (0, 0)
            at = f"{where}:{line}:{column}" if line else where
            least = "at least" if inclusive else "more than"
            problems.append(f"  {at}: server.{name}: must be {least} {bound:g}, not {value:g}")
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in settings file {where}:\n"
                          + "\n".join(problems))
