"""Settings block ``api``: who may call the daemon's promotion API, and its limits.

Two kinds of identity, each mapped to what it may promote (apps and target environments,
glob patterns): static bearer tokens read from files, and Kubernetes service-account tokens
verified as OIDC JWTs against each configured issuer (README: "Promoting from a PostSync job
with only a service-account token")::

    api:
      tokens:
        - name: ci
          file: /etc/image-updater/api/ci-token
          apps: ["shop-*"]
          envs: [staging]
      issuers:
        - issuer: https://kubernetes.default.svc.cluster.local
          audiences: [image-updater]
          jwks_file: /etc/image-updater/api/cluster-b-jwks.json   # optional: no discovery
      service_accounts:
        - issuer: https://kubernetes.default.svc.cluster.local
          subject: "system:serviceaccount:shop:promoter"
          apps: [shop]
          envs: [staging, prod]

Parsed here, every problem reported at once as ``file:line:column``; secrets are never
values: a token is named by the file holding it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from image_updater.errors import ConfigError

#: asymmetric algorithms only: ``none`` and HS* (a public key used as an HMAC secret) never
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
              "EdDSA")
DEFAULT_ALGORITHMS = ("RS256", "ES256")
DEFAULT_AUDIENCE = "image-updater"


@dataclass(frozen=True, kw_only=True)
class Grant:
    """What an identity may promote: any app matching one of ``apps`` into any target
    environment matching one of ``envs`` (shell-style globs, ``*`` for all)."""

    apps: tuple[str, ...]
    envs: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class TokenSettings:
    """``api.tokens[]``: a static bearer token, read from ``file`` (re-read when it changes)."""

    name: str                          #: shown in logs and commit trailers, never the token
    file: str
    grant: Grant


@dataclass(frozen=True, kw_only=True)
class IssuerSettings:
    """``api.issuers[]``: a cluster's service-account token issuer."""

    issuer: str                        #: the ``iss`` claim, exactly as the cluster writes it
    audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,)  #: ``aud`` must contain one of these
    jwks_file: str | None = None       #: the JWKS, for issuers the daemon cannot reach
    jwks_url: str | None = None        #: skip discovery and fetch the JWKS from here
    ca_file: str | None = None         #: PEM bundle for the issuer's TLS certificate
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway: float = 30.0               #: seconds of clock skew allowed on exp/nbf/iat


@dataclass(frozen=True, kw_only=True)
class ServiceAccountSettings:
    """``api.service_accounts[]``: ``subject`` (a glob over ``system:serviceaccount:NS:NAME``)
    of tokens from ``issuer`` may promote what ``grant`` says."""

    issuer: str
    subject: str
    grant: Grant


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    tokens: tuple[TokenSettings, ...] = ()
    issuers: tuple[IssuerSettings, ...] = ()
    service_accounts: tuple[ServiceAccountSettings, ...] = ()
    max_body_bytes: int = 16384        #: largest promotion request accepted, in bytes
    jwks_refresh: float = 300.0        #: seconds a fetched JWKS is used before refetching
    jwks_min_refetch: float = 10.0     #: at most one refetch per issuer this often (unknown kid)
    timeout: float = 10.0              #: seconds per discovery or JWKS request

    @property
    def enabled(self) -> bool:
        """Some identity is configured; without one, every request is refused with 401."""
        return bool(self.tokens or self.service_accounts)


def fetchable(url: str) -> bool:
    """Keys are fetched over https, or plain http on loopback only (tests, a local proxy)."""
    parts = urlsplit(url)
    return parts.scheme == "https" or (
        parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"))


def api_secret_files(api: ApiSettings) -> list[tuple[str, str]]:
    """(settings key, path) of every secret the block points at, for log masking."""
    return [(f"api.tokens[{t.name}].file", t.file) for t in api.tokens]


# -- parsing -----------------------------------------------------------------------------------


class _Walk:
    """The problems found so far, each located ``file:line:column`` when ruamel knows it."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.problems: list[str] = []

    def at(self, node: Any, key: Any = None) -> str:
        try:
            lc = node.lc
            line, col = (lc.key(key) if isinstance(node, dict) else lc.item(key)) \
                if key is not None else (lc.line, lc.col)
        except (AttributeError, KeyError, IndexError, TypeError):
            return self.where
        return f"{self.where}:{line + 1}:{col + 1}"

    def add(self, node: Any, key: Any, label: str, message: str) -> None:
        self.problems.append(f"{self.at(node, key)}: {label}: {message}")


def load_api(raw: Any, where: str) -> ApiSettings:
    """The ``api`` block of settings file ``where`` (None: defaults); ConfigError lists
    every problem at once."""
    if raw is None:
        return ApiSettings()
    walk = _Walk(where)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: api: must be a mapping of keys to values; see the "
                          "README's 'Promotion API' section.")
    allowed = ("tokens", "issuers", "service_accounts", "max_body_bytes", "jwks_refresh",
               "jwks_min_refetch", "timeout")
    _unknown(walk, raw, allowed, "api")
    numbers = {k: _number(walk, raw, k, f"api.{k}", minimum)
               for k, minimum in (("max_body_bytes", 1), ("jwks_refresh", 0),
                                  ("jwks_min_refetch", 0), ("timeout", 0))
               if k in raw}
    if numbers.get("timeout") == 0:  # httpx would give up on every fetch at once
        walk.add(raw, "timeout", "api.timeout", "must be more than 0 seconds (each discovery "
                 "or JWKS request may take this long)")
    issuers = tuple(_items(walk, raw, "issuers", _issuer))
    api = ApiSettings(tokens=tuple(_items(walk, raw, "tokens", _token)), issuers=issuers,
                      service_accounts=tuple(_items(walk, raw, "service_accounts",
                                                    _service_account)))
    _cross_check(walk, raw, api)
    if walk.problems:
        raise ConfigError(f"{len(walk.problems)} problem(s) in settings file {where}:\n"
                          + "\n".join(f"  {p}" for p in walk.problems))
    kwargs: dict[str, Any] = {k: (int(v) if k == "max_body_bytes" else float(v))
                              for k, v in numbers.items() if v is not None}
    from dataclasses import replace

    return replace(api, **kwargs)


def _items(walk: _Walk, raw: dict[str, Any], key: str,
           build: Callable[[_Walk, Any, str], Any]) -> Iterator[Any]:
    value = raw.get(key)
    if value is None:
        return
    if not isinstance(value, list):
        walk.add(raw, key, f"api.{key}", "must be a list (one '- ' item per entry)")
        return
    for i, item in enumerate(value):
        label = f"api.{key}[{i}]"
        if not isinstance(item, dict):
            walk.problems.append(f"{walk.at(value, i)}: {label}: must be a mapping")
            continue
        built = build(walk, item, label)
        if built is not None:
            yield built


def _token(walk: _Walk, item: dict[str, Any], label: str) -> TokenSettings | None:
    _unknown(walk, item, ("name", "file", "apps", "envs"), label)
    name, file = _string(walk, item, "name", label), _string(walk, item, "file", label)
    grant = _grant(walk, item, label)
    if name is None or file is None or grant is None:
        return None
    return TokenSettings(name=name, file=file, grant=grant)


def _issuer(walk: _Walk, item: dict[str, Any], label: str) -> IssuerSettings | None:
    _unknown(walk, item, ("issuer", "audiences", "jwks_file", "jwks_url", "ca_file",
                          "algorithms", "leeway"), label)
    issuer = _string(walk, item, "issuer", label)
    optional = {k: _string(walk, item, k, label, required=False)
                for k in ("jwks_file", "jwks_url", "ca_file")}
    audiences = _strings(walk, item, "audiences", label, default=(DEFAULT_AUDIENCE,))
    algorithms = _strings(walk, item, "algorithms", label, default=DEFAULT_ALGORITHMS)
    for alg in algorithms or ():
        if alg not in ALGORITHMS:
            walk.add(item, "algorithms", f"{label}.algorithms",
                     f"{alg!r} is not allowed; use some of {', '.join(ALGORITHMS)} (never "
                     "'none', and no HS* algorithm: a public key is no shared secret)")
    leeway = _number(walk, item, "leeway", f"{label}.leeway", 0) if "leeway" in item else 30.0
    if issuer is not None and optional["jwks_file"] is None:
        url = optional["jwks_url"] or issuer
        if not fetchable(url):
            walk.add(item, "jwks_url" if optional["jwks_url"] else "issuer",
                     f"{label}.{'jwks_url' if optional['jwks_url'] else 'issuer'}",
                     f"{url!r} is not an https:// URL the daemon can fetch keys from (plain "
                     "http only on loopback: keys fetched in the clear could be replaced); "
                     "set jwks_file (the cluster's JWKS) for an issuer it cannot reach")
    if None in (issuer, audiences, algorithms, leeway):
        return None
    assert issuer is not None and audiences is not None and algorithms is not None
    return IssuerSettings(issuer=issuer, audiences=audiences, algorithms=algorithms,
                          leeway=float(leeway or 0), **optional)


def _service_account(walk: _Walk, item: dict[str, Any], label: str
                     ) -> ServiceAccountSettings | None:
    _unknown(walk, item, ("issuer", "subject", "apps", "envs"), label)
    issuer = _string(walk, item, "issuer", label)
    subject = _string(walk, item, "subject", label)
    grant = _grant(walk, item, label)
    if subject is not None and not subject.startswith("system:serviceaccount:"):
        walk.add(item, "subject", f"{label}.subject",
                 f"{subject!r} is not a service account; write "
                 "system:serviceaccount:NAMESPACE:NAME (globs allowed)")
        return None
    if issuer is None or subject is None or grant is None:
        return None
    return ServiceAccountSettings(issuer=issuer, subject=subject, grant=grant)


def _grant(walk: _Walk, item: dict[str, Any], label: str) -> Grant | None:
    apps = _strings(walk, item, "apps", label, default=None)
    envs = _strings(walk, item, "envs", label, default=None)
    if apps is None or envs is None:
        return None
    return Grant(apps=apps, envs=envs)


def _cross_check(walk: _Walk, raw: dict[str, Any], api: ApiSettings) -> None:
    names = [t.name for t in api.tokens]
    for name in sorted({n for n in names if names.count(n) > 1}):
        walk.add(raw, "tokens", "api.tokens", f"{name!r} names two tokens; give each its own "
                 "name (logs and commit trailers name the token)")
    known = {i.issuer for i in api.issuers}
    for i, sa in enumerate(api.service_accounts):
        if sa.issuer not in known:
            listed = ", ".join(sorted(known)) or "none"
            walk.add(raw, "service_accounts", f"api.service_accounts[{i}].issuer",
                     f"{sa.issuer!r} is not one of api.issuers ({listed}); add the "
                     "cluster's issuer there")


def _unknown(walk: _Walk, node: dict[str, Any], allowed: tuple[str, ...], label: str) -> None:
    for key in node:
        if key not in allowed:
            walk.add(node, key, f"{label}.{key}",
                     f"unknown key (known keys: {', '.join(allowed)})")


def _string(walk: _Walk, node: dict[str, Any], key: str, label: str, *,
            required: bool = True) -> str | None:
    value = node.get(key)
    if value is None:
        if required:
            walk.problems.append(f"{walk.at(node)}: {label}.{key}: required key is missing")
        return None
    if not isinstance(value, str) or not value.strip():
        walk.add(node, key, f"{label}.{key}", f"must be a non-empty string, not {value!r:.60}")
        return None
    return str(value)


def _strings(walk: _Walk, node: dict[str, Any], key: str, label: str, *,
             default: tuple[str, ...] | None) -> tuple[str, ...] | None:
    value = node.get(key)
    if value is None:
        if default is None:
            walk.problems.append(f"{walk.at(node)}: {label}.{key}: required key is missing "
                                 "(a list; [\"*\"] means all)")
        return default
    if not isinstance(value, list) or not value or \
            not all(isinstance(v, str) and v for v in value):
        walk.add(node, key, f"{label}.{key}",
                 f"must be a non-empty list of strings, not {value!r:.60}")
        return None
    return tuple(str(v) for v in value)


def _number(walk: _Walk, node: dict[str, Any], key: str, label: str,
            minimum: float) -> float | None:
    value = node.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and \
            math.isfinite(value) and value >= minimum:
        return float(value)
    walk.add(node, key, label, f"must be a number of at least {minimum:g}, not {value!r:.60}")
    return None
