"""Registry authentication as an ``httpx.Auth`` flow: anonymous, Basic, or Bearer tokens.

A request first goes out with a cached token for its scope, if one is fresh, or
anonymously. A ``401`` carries the challenge that says what to do next:

- ``Basic realm=…``: resend with the configured username and password.
- ``Bearer realm=…,service=…,scope=…``: GET a token from the realm (with Basic credentials
  when configured), cache it per ``(realm, service, scopes)`` until shortly before it
  expires, and resend with it.

:meth:`RegistryAuth.auth_flow` is pure: it only yields requests and reads the responses it
is sent back. The async and sync wrappers do the I/O around it: they read token responses
(bounded) and serialise token fetches per cache key (an asyncio lock, a thread lock), so
concurrent requests for one scope cause one token fetch, not one each.

Credentials stay home: they go only to the configured registry origin and to a token realm
named by a challenge that origin itself sent. A challenge from any other host (a redirect
target, say a blob store) is refused with an error rather than answered, a cached token or
Basic header is never attached to a request for another origin (httpx itself drops the
header when it follows a redirect across origins), and a plain-``http://`` realm is
refused unless the registry itself is configured ``insecure``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
from collections.abc import AsyncGenerator, Generator, Iterable
from dataclasses import dataclass
from datetime import datetime

import httpx

from image_updater.clocks import WallClock
from image_updater.errors import RegistryAuthError, TransientRegistryError, truncate
from image_updater.registry.credentials import CredentialSource

#: request extension: scopes this request needs, e.g. ``("repository:team/app:pull,push",)``;
#: without it the scope is derived from the URL (pull for GET/HEAD, pull,push otherwise).
SCOPES_EXTENSION = "image_updater.scopes"
# request extension marking a token fetch; its value is the token cache key
_TOKEN_KEY_EXTENSION = "image_updater.token_key"

DEFAULT_TOKEN_LIFETIME = 60.0
MAX_TOKEN_RESPONSE = 256 * 1024

_TOKEN_CHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM_RE = re.compile(rf'\s*({_TOKEN_CHARS})\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*')
# A scheme, optionally followed by a token68 blob (never by "key=").
_SCHEME_RE = re.compile(rf"\s*({_TOKEN_CHARS})(?:\s+[A-Za-z0-9._~+/-]+=*(?=\s*(?:,|$)))?\s*")
_REPOSITORY_PATH_RE = re.compile(r"^/v2/(?P<name>.+?)/(?:manifests|blobs|tags)/")

TokenKey = tuple[str, str, tuple[str, ...]]


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge; the scheme is lowercase, params keep their case."""

    scheme: str
    params: dict[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value; quoted values may hold commas and escapes."""
    challenges: list[Challenge] = []
    pos = 0
    while pos < len(header):
        if header[pos] in ", \t":
            pos += 1
            continue
        param = _PARAM_RE.match(header, pos)
        if param is not None and challenges:
            challenges[-1].params[param.group(1).lower()] = _unquote(param.group(2))
            pos = param.end()
            continue
        scheme = _SCHEME_RE.match(header, pos)
        if scheme is None or scheme.end() == pos:
            break  # garbage: keep what parsed so far
        challenges.append(Challenge(scheme.group(1).lower(), {}))
        pos = scheme.end()
    return challenges


def repository_scope(repository: str, actions: Iterable[str]) -> str:
    """``repository:team/app:pull,push``: the scope a token needs for these actions."""
    return f"repository:{repository}:{','.join(sorted(set(actions)))}"


def normalize_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Merge actions per resource and sort, so equal needs give equal cache keys."""
    merged: dict[str, set[str]] = {}
    for scope in scopes:
        for item in scope.split():
            resource, sep, actions = item.rpartition(":")
            if not sep or not resource:
                continue
            merged.setdefault(resource, set()).update(a for a in actions.split(",") if a)
    return tuple(f"{res}:{','.join(sorted(acts))}" for res, acts in sorted(merged.items()))


class RegistryAuth(httpx.Auth):
    """Authentication for one registry host; one instance is shared by all its requests."""

    def __init__(self, *, registry: str, credentials: CredentialSource, clock: WallClock,
                 origin: str, insecure: bool = False) -> None:
        """``origin`` is the registry's base URL (``https://host[:port]``); ``insecure``
        allows plain-HTTP token realms, as it allows a plain-HTTP registry."""
        self._registry = registry
        self._origin = _origin_of(httpx.URL(origin))
        self._insecure = insecure
        self._credentials = credentials
        self._clock = clock  # wall-clock seconds: token ``issued_at`` is wall time
        self._bearer: tuple[str, str] | None = None  # (realm, service) last challenged with
        self._basic = False
        self._tokens: dict[TokenKey, tuple[str, float]] = {}
        self._locks: dict[TokenKey, asyncio.Lock] = {}
        self._thread_locks: dict[TokenKey, threading.Lock] = {}
        self._thread_locks_guard = threading.Lock()

    # -- the pure flow -------------------------------------------------------------------

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response | None,
                                                              None]:
        wanted = _wanted_scopes(request)
        home = _origin_of(request.url) == self._origin
        sent = self._authorize_from_cache(request, wanted) if home else None
        response = yield request
        if response is None or response.status_code != 401 or not _replayable(request):
            return
        challenge = _pick_challenge(response)
        if challenge is None:
            return
        self._check_challenger(request, response)
        if challenge.scheme == "basic":
            yield from self._basic_flow(request, sent)
            return
        yield from self._bearer_flow(request, challenge, wanted, sent)

    def _basic_flow(self, request: httpx.Request, sent: str | None
                    ) -> Generator[httpx.Request, httpx.Response | None, None]:
        credentials = self._credentials.get()
        header = _basic_header(credentials) if credentials else None
        if header is None or header == sent:
            return  # nothing (new) to offer: the caller turns the 401 into an error
        self._basic = True
        request.headers["Authorization"] = header
        yield request

    def _bearer_flow(self, request: httpx.Request, challenge: Challenge, wanted: tuple[str, ...],
                     sent: str | None) -> Generator[httpx.Request, httpx.Response | None, None]:
        realm = challenge.params.get("realm", "")
        service = challenge.params.get("service", "")
        if not realm.startswith(("https://", "http://")):
            raise RegistryAuthError(
                f"registry {self._registry} sent a Bearer challenge without a usable realm URL "
                f"({truncate(realm, 100)!r}); the registry's token auth is misconfigured.",
                registry=self._registry, url=str(request.url))
        if realm.startswith("http://") and not self._insecure:
            raise RegistryAuthError(
                f"registry {self._registry} names a plain-HTTP token realm "
                f"{truncate(realm, 200)}; credentials are not sent over plain HTTP. Serve the "
                "token service over HTTPS, or, for a local or test registry only, declare it "
                f"in the settings file: registries: [{{host: '{self._registry}', insecure: "
                "true}].", registry=self._registry, url=truncate(realm, 200))
        self._bearer = (realm, service)
        scopes = normalize_scopes((*wanted, challenge.params.get("scope", "")))
        key: TokenKey = (realm, service, scopes)
        token = self._fresh_token(key)
        if token is None or f"Bearer {token}" == sent:
            self._tokens.pop(key, None)  # the registry refused it: fetch a new one once
            token_response = yield self._token_request(request, key)
            token = (self._fresh_token(key) if token_response is None
                     else self._accept_token(key, token_response))
            if token is None:
                return
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    def _check_challenger(self, request: httpx.Request, response: httpx.Response) -> None:
        """Refuse a challenge from anywhere but the registry itself (e.g. a redirect target):
        answering it would hand our credentials, or a token realm it picked, to that host."""
        challenger = response.request.url
        if _origin_of(challenger) == self._origin:
            return
        raise RegistryAuthError(
            f"registry {self._registry} redirected {request.method} {_shown(request.url)} to "
            f"another host, {challenger.netloc.decode('ascii', 'replace')}, which asked for "
            f"credentials (HTTP 401). Credentials are only sent to {self._registry} and the "
            "token service it names, so the request is refused; check the registry's "
            "storage-redirect settings, or make the redirect target allow anonymous reads.",
            registry=self._registry, url=_shown(challenger))

    def _authorize_from_cache(self, request: httpx.Request, wanted: tuple[str, ...]
                              ) -> str | None:
        """Attach what worked before, saving a 401 round trip; return the header sent."""
        header: str | None = None
        if self._bearer is not None:
            token = self._fresh_token((*self._bearer, wanted))
            header = f"Bearer {token}" if token else None
        elif self._basic:
            credentials = self._credentials.get()
            header = _basic_header(credentials) if credentials else None
        if header is not None:
            request.headers["Authorization"] = header
        return header

    def _token_request(self, request: httpx.Request, key: TokenKey) -> httpx.Request:
        realm, service, scopes = key
        params: dict[str, str | list[str]] = {"scope": list(scopes)}
        if service:
            params["service"] = service
        headers = {"Accept": "application/json"}
        credentials = self._credentials.get()
        if credentials:
            headers["Authorization"] = _basic_header(credentials)
        extensions = {_TOKEN_KEY_EXTENSION: key}
        if "timeout" in request.extensions:
            extensions["timeout"] = request.extensions["timeout"]
        return httpx.Request("GET", realm, params=params, headers=headers, extensions=extensions)

    def _accept_token(self, key: TokenKey, response: httpx.Response) -> str:
        realm, _, scopes = key
        where = f"token server {realm} for registry {self._registry}"
        if response.status_code in (401, 403):
            raise RegistryAuthError(
                f"The {where} refused {self._credentials.describe()} for "
                f"{_describe_scopes(scopes)} (HTTP {response.status_code}); check that these "
                "credentials are current and allowed that access.",
                registry=self._registry, url=realm)
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientRegistryError(
                f"The {where} is unavailable (HTTP {response.status_code}); the request will "
                "be retried.", registry=self._registry, url=realm)
        token, lifetime, issued_at = _parse_token_body(response, where, self._registry, realm)
        self._remember(key, token, lifetime, issued_at)
        return token

    def _remember(self, key: TokenKey, token: str, lifetime: float,
                  issued_at: float | None) -> None:
        now = self._clock()
        # A skewed issued_at must neither extend the token's life nor expire it at once.
        start = issued_at if issued_at is not None and now - lifetime < issued_at <= now else now
        margin = min(30.0, lifetime * 0.1)
        self._tokens[key] = (token, start + lifetime - margin)

    def _fresh_token(self, key: TokenKey) -> str | None:
        entry = self._tokens.get(key)
        if entry is None or entry[1] <= self._clock():
            return None
        return entry[0]

    # -- I/O around the flow ---------------------------------------------------------------

    async def async_auth_flow(self, request: httpx.Request
                              ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = self.auth_flow(request)
        outgoing = next(flow)
        while True:
            key = outgoing.extensions.get(_TOKEN_KEY_EXTENSION)
            response: httpx.Response | None
            if key is None:
                response = yield outgoing
            else:
                async with self._locks.setdefault(key, asyncio.Lock()):
                    if self._fresh_token(key) is not None:
                        response = None  # a concurrent request fetched it while we waited
                    else:
                        raw = yield outgoing
                        response = await _aread_small(raw)
            try:
                outgoing = flow.send(response)
            except StopIteration:
                return

    def sync_auth_flow(self, request: httpx.Request
                       ) -> Generator[httpx.Request, httpx.Response, None]:
        """The flow for the sync client, whose requests run on worker threads (bulk HEADs):
        token fetches are serialised per cache key by a thread lock, as above."""
        flow = self.auth_flow(request)
        outgoing = next(flow)
        while True:
            key = outgoing.extensions.get(_TOKEN_KEY_EXTENSION)
            response: httpx.Response | None
            if key is None:
                response = yield outgoing
            else:
                with self._thread_lock(key):
                    if self._fresh_token(key) is not None:
                        response = None  # another thread fetched it while we waited
                    else:
                        response = _read_small((yield outgoing))
            try:
                outgoing = flow.send(response)
            except StopIteration:
                return

    def _thread_lock(self, key: TokenKey) -> threading.Lock:
        with self._thread_locks_guard:
            return self._thread_locks.setdefault(key, threading.Lock())


def _wanted_scopes(request: httpx.Request) -> tuple[str, ...]:
    explicit = request.extensions.get(SCOPES_EXTENSION)
    if explicit:
        return normalize_scopes(explicit)
    match = _REPOSITORY_PATH_RE.match(request.url.path)
    if match is None:
        return ()
    actions = ("pull",) if request.method in ("GET", "HEAD") else ("pull", "push")
    return normalize_scopes([repository_scope(match.group("name"), actions)])


def _origin_of(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port if url.port is not None else default


def _shown(url: httpx.URL) -> str:
    """A URL fit for messages: no query (scopes, upload state) and no user info."""
    return str(url.copy_with(query=None, fragment=None, userinfo=b""))


def _replayable(request: httpx.Request) -> bool:
    # A streamed upload body cannot be sent twice; its caller authenticates beforehand.
    return isinstance(request.stream, httpx.ByteStream)


def _pick_challenge(response: httpx.Response) -> Challenge | None:
    challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return None


def _basic_header(credentials: tuple[str, str]) -> str:
    raw = f"{credentials[0]}:{credentials[1]}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _describe_scopes(scopes: tuple[str, ...]) -> str:
    if not scopes:
        return "the registry itself"
    parts = []
    for scope in scopes:
        resource, _, actions = scope.rpartition(":")
        kind, _, name = resource.partition(":")
        parts.append(f"{actions} on {kind} {name}")
    return ", ".join(parts)


def _parse_token_body(response: httpx.Response, where: str, registry: str, realm: str
                      ) -> tuple[str, float, float | None]:
    try:
        data = json.loads(response.content)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegistryAuthError(
            f"The {where} answered HTTP {response.status_code} without a JSON token: "
            f"{truncate(response.content)!r}. Check the registry's token service.",
            registry=registry, url=realm) from exc
    if not isinstance(data, dict):
        raise RegistryAuthError(
            f"The {where} answered HTTP {response.status_code} with JSON that is not an "
            "object. Check the registry's token service.", registry=registry, url=realm)
    token = _token_field(data, where, registry, realm)
    if token is None or any(c in token for c in "\r\n "):
        raise RegistryAuthError(
            f"The {where} answered HTTP {response.status_code} without a usable 'token' or "
            "'access_token'. Check the registry's token service.", registry=registry, url=realm)
    lifetime = data.get("expires_in")
    if lifetime is not None and (isinstance(lifetime, bool)
                                 or not isinstance(lifetime, int | float)):
        raise RegistryAuthError(
            f"The {where} answered with 'expires_in' {truncate(repr(lifetime), 40)}, which is "
            "not a number of seconds. Check the registry's token service.",
            registry=registry, url=realm)
    return token, _lifetime(lifetime), _issued_at(data.get("issued_at"))


def _token_field(data: dict[str, object], where: str, registry: str, realm: str
                 ) -> str | None:
    """``token``, else ``access_token`` (the OAuth2 name); each must be a string if sent."""
    for name in ("token", "access_token"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise RegistryAuthError(
                f"The {where} answered with a '{name}' that is not a string. Check the "
                "registry's token service.", registry=registry, url=realm)
    token = data.get("token") or data.get("access_token")
    return token if isinstance(token, str) and token else None


def _lifetime(value: int | float | None) -> float:
    # Absent, zero or negative: the spec's default of 60 seconds.
    return float(value) if value is not None and value > 0 else DEFAULT_TOKEN_LIFETIME


def _issued_at(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value)  # RFC 3339 may carry nanoseconds
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


async def _aread_small(response: httpx.Response) -> httpx.Response:
    if _too_large(response):
        return _empty_copy(response)
    await response.aread()
    return response


def _read_small(response: httpx.Response) -> httpx.Response:
    if _too_large(response):
        return _empty_copy(response)
    response.read()
    return response


def _too_large(response: httpx.Response) -> bool:
    # The realm comes from the registry's challenge: do not buffer an arbitrary body from it.
    length = response.headers.get("Content-Length", "")
    return length.isdigit() and int(length) > MAX_TOKEN_RESPONSE


def _empty_copy(response: httpx.Response) -> httpx.Response:
    # An empty body makes the flow raise, so httpx never reads the oversized original.
    return httpx.Response(response.status_code, content=b"", request=response.request)
