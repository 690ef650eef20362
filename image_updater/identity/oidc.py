"""Kubernetes service-account tokens, verified as OIDC JWTs without calling the cluster.

A projected service-account token is a JWT signed by the cluster's service-account issuer.
Its public keys are published as a JWKS, found through the issuer's discovery document
(``<iss>/.well-known/openid-configuration`` → ``jwks_uri``), or given as a file for a
cluster whose issuer the daemon cannot reach. No TokenReview call: the daemon needs no
credentials for the clusters whose jobs call it.

Checked, in order: the algorithm is on the issuer's allow-list (never ``none``, never HS*),
the ``iss`` is a configured issuer, the signature verifies with the key named by ``kid``,
then ``aud`` (one of the issuer's audiences), ``exp``/``nbf``/``iat`` (with a small leeway)
and ``iss`` again, on the verified claims. Keys are cached for ``refresh`` seconds; a
token naming an unknown ``kid`` (the cluster rotated its key) refetches at most once per
``min_refetch`` seconds, so a flood of forged ``kid``s cannot make us hammer the issuer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import jwt

from image_updater.config.api import IssuerSettings, fetchable
from image_updater.errors import IdentityUnavailableError, UnauthenticatedError, truncate

log = logging.getLogger("image_updater.identity")

#: a discovery document or JWKS larger than this is refused (bytes)
MAX_DOCUMENT = 1 << 20
DISCOVERY_PATH = "/.well-known/openid-configuration"
_KTY = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class IssuerKeys:
    """The signing keys of one issuer, fetched (or read) and cached."""

    def __init__(self, settings: IssuerSettings, *, timeout: float, refresh: float,
                 min_refetch: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._timeout = timeout
        self._refresh = refresh
        self._min_refetch = min_refetch
        self._clock = clock
        self._keys: list[dict[str, Any]] = []
        self._fetched_at = float("-inf")   # when the keys we hold were fetched
        self._tried_at = float("-inf")     # when a fetch was last attempted
        self._jwks_url: str | None = settings.jwks_url
        self._lock = asyncio.Lock()
        #: why the last fetch failed while no key was ever had: until a fetch succeeds, every
        #: token is answered with it (503, temporary), not "no such key" (401, final)
        self._unavailable: IdentityUnavailableError | None = None

    async def candidates(self, kid: str | None, alg: str) -> list[jwt.PyJWK]:
        """The keys that may have signed a token with header ``kid`` and ``alg``."""
        if self._clock() - self._fetched_at >= self._refresh:
            await self._load(force=False)
        found = self._pick(kid, alg)
        if not found and self._clock() - self._tried_at >= self._min_refetch:
            await self._load(force=True)  # a rotated key: look again, rate-limited
            found = self._pick(kid, alg)
        if not self._keys and self._unavailable is not None:
            raise IdentityUnavailableError(str(self._unavailable))
        return found

    def _pick(self, kid: str | None, alg: str) -> list[jwt.PyJWK]:
        picked = []
        for data in self._keys:
            if kid is not None and data.get("kid") != kid:
                continue
            if data.get("kty") != _KTY.get(alg[:2]) or data.get("alg", alg) != alg:
                continue  # an RSA key never verifies an ES256 token, and so on
            try:
                picked.append(jwt.PyJWK(data, algorithm=alg))
            except jwt.PyJWTError:
                continue  # a malformed or unsupported key in the set: the others still count
        return picked

    async def _load(self, *, force: bool) -> None:
        async with self._lock:
            now = self._clock()
            if now - self._tried_at < self._min_refetch or (
                    not force and now - self._fetched_at < self._refresh):
                return  # another request refreshed (or tried) while we waited
            self._tried_at = now
            try:
                keys = await self._fetch()
            except IdentityUnavailableError as exc:
                if not self._keys:
                    self._unavailable = exc
                    raise
                log.warning("%s; keeping the %d key(s) fetched before, will try again "
                            "within %.0f s", exc, len(self._keys), self._min_refetch)
                return
            self._keys, self._fetched_at, self._unavailable = keys, now, None

    async def _fetch(self) -> list[dict[str, Any]]:
        if self.settings.jwks_file is not None:
            return await asyncio.to_thread(read_jwks_file, self.settings)
        if self._jwks_url is None:
            self._jwks_url = await self._discover()
        return _keys_of(await self._get_json(self._jwks_url, "JWKS"), self._jwks_url)

    async def _discover(self) -> str:
        url = self.settings.issuer.rstrip("/") + DISCOVERY_PATH
        document = await self._get_json(url, "discovery document")
        if document.get("issuer") != self.settings.issuer:
            raise IdentityUnavailableError(
                f"The discovery document at {url} names issuer "
                f"{truncate(str(document.get('issuer')), 100)!r}, not "
                f"{self.settings.issuer!r}; fix api.issuers[].issuer to the cluster's exact "
                "service-account issuer.")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not fetchable(jwks_uri):
            raise IdentityUnavailableError(
                f"The discovery document at {url} has no usable jwks_uri (an https:// URL; "
                "plain http only on loopback); set api.issuers[].jwks_url or jwks_file.")
        return jwks_uri

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        # A client per fetch: fetches are minutes apart, and nothing is left to close.
        try:
            async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False,
                                         verify=self.settings.ca_file or True) as client, \
                    client.stream("GET", url) as response:
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT:
                        raise IdentityUnavailableError(
                            f"The {what} at {url} is larger than {MAX_DOCUMENT} bytes; "
                            "refused.")
        except httpx.HTTPError as exc:
            raise IdentityUnavailableError(
                f"Cannot fetch the {what} of issuer {self.settings.issuer} from {url} "
                f"({type(exc).__name__}: {truncate(str(exc), 120)}); service-account tokens "
                "from it cannot be verified until it answers.") from exc
        if response.status_code != 200:
            raise IdentityUnavailableError(
                f"The {what} at {url} answered {response.status_code}: {truncate(body)}")
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise IdentityUnavailableError(f"The {what} at {url} is not a JSON object.")
        return document


def read_jwks_file(settings: IssuerSettings) -> list[dict[str, Any]]:
    path = settings.jwks_file
    assert path is not None
    try:
        text = Path(path).read_bytes()[:MAX_DOCUMENT + 1]
        document = json.loads(text) if len(text) <= MAX_DOCUMENT else None
    except (OSError, ValueError) as exc:
        raise IdentityUnavailableError(
            f"Cannot read the JWKS file {path} of issuer {settings.issuer} "
            f"({type(exc).__name__}); write the cluster's JWKS there (kubectl get --raw "
            "/openid/v1/jwks).") from exc
    return _keys_of(document, path)


def _keys_of(document: Any, where: str) -> list[dict[str, Any]]:
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise IdentityUnavailableError(f"The JWKS at {where} has no 'keys' list.")
    return [k for k in keys if isinstance(k, dict)]


class ServiceAccountVerifier:
    """Verifies tokens of the configured issuers; returns the verified claims."""

    def __init__(self, issuers: Sequence[IssuerSettings], *, refresh: float,
                 min_refetch: float, timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._issuers: Mapping[str, IssuerKeys] = {
            i.issuer: IssuerKeys(i, timeout=timeout, refresh=refresh, min_refetch=min_refetch,
                                 clock=clock) for i in issuers}

    async def verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise UnauthenticatedError("The bearer token is neither a known API token nor a "
                                       "well-formed JWT; check the token file.") from None
        keys = self._keys_for(unverified.get("iss"))
        issuer = keys.settings
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in issuer.algorithms:
            raise UnauthenticatedError(
                f"The token is signed with algorithm {truncate(str(alg), 20)!r}, which "
                f"api.issuers[{issuer.issuer}].algorithms does not allow "
                f"({', '.join(issuer.algorithms)}).")
        candidates = await keys.candidates(kid if isinstance(kid, str) else None, alg)
        if not candidates:
            raise UnauthenticatedError(
                f"No signing key of issuer {issuer.issuer} has key id "
                f"{truncate(str(kid), 80)!r} for {alg}; the token was not signed by that "
                "cluster (or its keys cannot be read).")
        return _decode(token, candidates, issuer)

    def _keys_for(self, iss: Any) -> IssuerKeys:
        keys = self._issuers.get(iss) if isinstance(iss, str) else None
        if keys is None:
            # The configured issuers are not listed: this answer goes to whoever asks, and
            # with status_page.access: authenticated nothing may be told to strangers.
            raise UnauthenticatedError(
                f"The token was issued by {truncate(str(iss), 100)!r}, which is not one of "
                "the daemon's api.issuers; add that cluster's service-account issuer there "
                "(kubectl get --raw /.well-known/openid-configuration names it).")
        return keys


def _decode(token: str, candidates: Sequence[jwt.PyJWK], issuer: IssuerSettings
            ) -> dict[str, Any]:
    error: jwt.PyJWTError | None = None
    for key in candidates:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key=key, algorithms=list(issuer.algorithms),
                audience=list(issuer.audiences), issuer=issuer.issuer, leeway=issuer.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]})
            return claims
        except jwt.InvalidSignatureError as exc:
            error = exc
            continue  # kid-less tokens: another candidate key may verify it
        except jwt.PyJWTError as exc:
            raise UnauthenticatedError(_refusal(exc, issuer)) from None
    raise UnauthenticatedError(_refusal(error, issuer)) from None


def _refusal(exc: jwt.PyJWTError | None, issuer: IssuerSettings) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return ("The service-account token has expired; a projected token is refreshed by "
                "the kubelet: read the file again for each request.")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "The service-account token is not valid yet (nbf/iat in the future)."
    if isinstance(exc, jwt.InvalidAudienceError):
        return (f"The service-account token's audience is not one of "
                f"{', '.join(issuer.audiences)}; project it with "
                f"'audience: {issuer.audiences[0]}'.")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"The service-account token has no {exc.claim!r} claim; it is refused."
    if isinstance(exc, jwt.InvalidSignatureError) or exc is None:
        return (f"The token's signature does not verify with the keys of issuer "
                f"{issuer.issuer}; it was not signed by that cluster.")
    return f"The service-account token is not valid ({type(exc).__name__})."
