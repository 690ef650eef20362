"""The verified caller of the API and what it may promote. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from image_updater.config.api import Grant
from image_updater.errors import PermissionDeniedError


@dataclass(frozen=True)
class Principal:
    """``name`` is safe to log and to write into commit trailers: ``token:NAME`` or the
    service account's ``sub`` (``system:serviceaccount:NS:NAME``), never a credential."""

    name: str
    kind: Literal["token", "service-account"]
    grants: tuple[Grant, ...]
    issuer: str = ""      # service accounts: the cluster's issuer

    def may_promote(self, app: str, env: str) -> bool:
        """True when some grant matches both ``app`` and the target environment ``env``."""
        return any(_matches(app, g.apps) and _matches(env, g.envs) for g in self.grants)

    def require(self, app: str, env: str) -> None:
        """PermissionDeniedError unless :meth:`may_promote`; the message says how to grant."""
        if self.may_promote(app, env):
            return
        where = ("api.tokens" if self.kind == "token"
                 else f"api.service_accounts (issuer {self.issuer})")
        raise PermissionDeniedError(
            f"{self.name} may not promote app {app} to {env}; grant it in the settings' "
            f"{where} (apps and envs), or use an identity that has the grant.")


def _matches(value: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(value, p) for p in patterns)
