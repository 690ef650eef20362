"""One ``Authorization`` header in, a :class:`Principal` (or a typed refusal) out."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from fnmatch import fnmatchcase

from image_updater.config.api import ApiSettings
from image_updater.errors import ConfigError, IdentityUnavailableError, UnauthenticatedError
from image_updater.identity.oidc import ServiceAccountVerifier, read_jwks_file
from image_updater.identity.principal import Principal
from image_updater.identity.tokens import StaticTokens
from image_updater.secrets import SecretRegistry

#: longer Authorization headers are refused unread (a service-account JWT is ~1 KiB)
MAX_CREDENTIAL = 8192
_JWT_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


class Authenticator:
    """Built once per daemon from ``settings.api``; it holds no open connection."""

    def __init__(self, api: ApiSettings, *, secrets: SecretRegistry,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self._tokens = StaticTokens(api.tokens, secrets=secrets, clock=clock)
        self._verifier = ServiceAccountVerifier(
            api.issuers, refresh=api.jwks_refresh, min_refetch=api.jwks_min_refetch,
            timeout=api.timeout, clock=clock)

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller named by an ``Authorization: Bearer …`` header.

        Raises UnauthenticatedError (401) for a missing, unknown, expired or unverifiable
        credential, IdentityUnavailableError (503) when an issuer's keys cannot be fetched.
        Whether the principal may promote something is :meth:`Principal.require`'s (403).
        """
        token = _bearer(authorization)
        if not self.api.enabled:
            raise UnauthenticatedError(
                "The promotion API has no identities configured; add api.tokens or "
                "api.service_accounts to the daemon's settings.")
        static = self._tokens.match(token)
        if static is not None:
            return Principal(name=f"api-token/{static.name}", kind="token",
                             grants=(static.grant,))
        if not (self.api.issuers and _JWT_RE.match(token)):
            raise UnauthenticatedError("The bearer token is not one of the API's tokens; "
                                       "check the token file the client reads.")
        claims = await self._verifier.verify(token)
        return self._service_account(str(claims["sub"]), str(claims["iss"]))

    def _service_account(self, subject: str, issuer: str) -> Principal:
        grants = tuple(sa.grant for sa in self.api.service_accounts
                       if sa.issuer == issuer and fnmatchcase(subject, sa.subject))
        # A verified token with no grant at all is a known identity refused (403), with
        # the message saying how to grant it.
        return Principal(name=subject, kind="service-account", grants=grants, issuer=issuer)


def check_identities(api: ApiSettings, *, secrets: SecretRegistry) -> None:
    """What ``validate --config`` checks of the ``api`` block beyond its shape: every token
    file holds a usable token (as the daemon's start requires), and every ``jwks_file`` is a
    JWKS with keys (the daemon reads it only at the first request, and would answer 503)."""
    StaticTokens(api.tokens, secrets=secrets)
    for issuer in api.issuers:
        if issuer.jwks_file is None:
            continue
        try:
            keys = read_jwks_file(issuer)
        except IdentityUnavailableError as exc:
            raise ConfigError(f"api.issuers[{issuer.issuer}].jwks_file: {exc}") from None
        if not keys:
            raise ConfigError(f"api.issuers[{issuer.issuer}].jwks_file {issuer.jwks_file} "
                              "has no keys; write the cluster's JWKS there (kubectl get --raw "
                              "/openid/v1/jwks).")


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise UnauthenticatedError("The request has no Authorization header; send "
                                   "'Authorization: Bearer <token>'.")
    if len(authorization) > MAX_CREDENTIAL:
        raise UnauthenticatedError(f"The Authorization header is longer than "
                                   f"{MAX_CREDENTIAL} characters; refused.")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise UnauthenticatedError("The Authorization header is not 'Bearer <token>'.")
    return token
