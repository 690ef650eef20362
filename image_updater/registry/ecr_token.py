"""Basic credentials for ECR's OCI (docker) API, from ``ecr:GetAuthorizationToken``.

The OCI client copies blobs between registries through the distribution API, which ECR
guards with HTTP basic auth: user ``AWS`` and a password valid for 12 hours. This provider
fetches one, caches it and fetches a new one ``margin`` before it expires. It is a plain
callable returning ``(username, password)``, so the OCI client needs no AWS knowledge.
The password is never logged, shown in a message or kept anywhere but this object.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from image_updater.errors import RegistryAuthError
from image_updater.registry.ecr_errors import Target, is_aws_error, translate

#: the current time as an aware UTC datetime (ECR token expiry is a datetime)
UtcClock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class EcrTokenProvider:
    """A cached ECR authorization token as ``(username, password)``.

    ``get`` blocks while it fetches (about once every 12 hours); it is thread-safe so that
    concurrent copies share one fetch.
    """

    def __init__(self, client: Any, *, host: str, clock: UtcClock = utc_now,
                 margin: timedelta = timedelta(minutes=15), max_attempts: int = 1) -> None:
        self._client = client
        self._host = host
        self._clock = clock
        self._margin = margin
        self._max_attempts = max_attempts
        self._lock = threading.Lock()
        self._credentials: tuple[str, str] | None = None
        self._refresh_at: datetime | None = None

    def __repr__(self) -> str:  # never show the cached password
        return f"EcrTokenProvider(host={self._host!r})"

    def get(self) -> tuple[str, str]:
        with self._lock:
            now = self._clock()
            if self._credentials is not None and self._refresh_at is not None \
                    and now < self._refresh_at:
                return self._credentials
            credentials, expires_at = self._fetch()
            self._credentials = credentials
            # A token that arrives already inside the margin is used once, not cached.
            self._refresh_at = expires_at - self._margin if expires_at else now
            return credentials

    __call__ = get

    def describe(self) -> str:
        """Where the credentials come from (the OCI client's ``CredentialSource`` protocol)."""
        return f"an ECR authorization token for {self._host} (ecr:GetAuthorizationToken)"

    def _fetch(self) -> tuple[tuple[str, str], datetime | None]:
        try:
            response = self._client.get_authorization_token()
        except Exception as exc:
            if not is_aws_error(exc):
                raise
            target = Target(host=self._host, operation="GetAuthorizationToken",
                            subject="an authorization token", resource_arn="*",
                            max_attempts=self._max_attempts)
            raise translate(exc, target) from exc
        data = (response.get("authorizationData") or [{}])[0]
        expires_at = data.get("expiresAt")
        return self._decode(data.get("authorizationToken")), (
            expires_at if isinstance(expires_at, datetime) else None)

    def _decode(self, token: object) -> tuple[str, str]:
        # The token is base64("AWS:<password>"); never quote it, even when it is malformed.
        try:
            text = base64.b64decode(str(token), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            text = ""
        user, sep, password = text.partition(":")
        if not (token and sep and user and password):
            raise RegistryAuthError(
                f"ECR returned an authorization token for registry {self._host} that is not "
                "base64 of 'user:password'; the OCI API of this registry cannot be used until "
                "GetAuthorizationToken answers normally. The next copy will fetch a new one.",
                registry=self._host)
        return user, password
