"""Global settings: registries, git, forges, schedule, server. One YAML file + env overrides.

Every field has a named default, so an empty file (or none) is a valid configuration for
anonymous registries and a local deploy repository. Secrets are never values here: the
settings name the *file* or *environment variable* that holds each secret.

Environment overrides (useful in containers): ``IMAGE_UPDATER_INTERVAL`` (seconds),
``IMAGE_UPDATER_LISTEN`` (host:port), ``IMAGE_UPDATER_CACHE_DIR``, ``IMAGE_UPDATER_LOG_FORMAT``
(text|json), ``IMAGE_UPDATER_LOG_LEVEL``, ``IMAGE_UPDATER_GIT_AUTHOR_NAME``,
``IMAGE_UPDATER_GIT_AUTHOR_EMAIL``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from image_updater.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class CredentialsSettings:
    """Where a registry's credentials come from; at most one source is used."""

    docker_config: str | None = None   #: path of a Docker config.json (``auths``)
    username: str | None = None        #: the user name (not a secret)
    password_env: str | None = None    #: env var holding the password or token
    username_file: str | None = None   #: file holding the username (k8s secret mount)
    password_file: str | None = None   #: file holding the password (k8s secret mount)


@dataclass(frozen=True, kw_only=True)
class EcrSettings:
    """``registries[].ecr``: see docs/ecr.md for each field."""

    region: str | None = None          #: defaults to the region in the registry host
    account: str | None = None         #: defaults to the account in the registry host
    role_arn: str | None = None        #: IAM role to assume (refreshed automatically)
    role_session_name: str = "image-updater"
    external_id: str | None = None     #: required by some trust policies; never logged
    endpoint_url: str | None = None    #: VPC endpoint, or moto in tests
    sts_endpoint_url: str | None = None  #: STS endpoint for role_arn (VPC endpoint)
    max_attempts: int = 5              #: botocore adaptive-retry attempts per call


@dataclass(frozen=True, kw_only=True)
class RegistrySettings:
    host: str  #: e.g. ghcr.io, 127.0.0.1:5000, <account>.dkr.ecr.<region>.amazonaws.com
    insecure: bool = False             #: allow plain HTTP (only for local registries)
    ca_file: str | None = None         #: PEM bundle to verify the registry's TLS certificate
    credentials: CredentialsSettings = field(default_factory=CredentialsSettings)
    max_concurrency: int = 16          #: requests in flight to this registry
    requests_per_second: float = 0     #: 0 = unlimited
    timeout: float = 10.0              #: seconds per request
    max_retries: int = 4               #: retries after connection errors, 5xx and 429
    ecr: EcrSettings | None = None     #: set for ECR hosts (detected from the host otherwise)


@dataclass(frozen=True, kw_only=True)
class GitSettings:
    author_name: str = "image-updater"
    author_email: str = "image-updater@localhost"
    ssh_key_file: str | None = None    #: private key for ssh:// and git@ URLs
    known_hosts_file: str | None = None  #: required with ssh_key_file: hosts are verified
    token_file: str | None = None      #: HTTPS token (never placed in URLs)
    token_env: str | None = None
    username: str = "x-access-token"   #: HTTPS username sent with the token
    max_push_attempts: int = 5


@dataclass(frozen=True, kw_only=True)
class ForgeSettings:
    url_prefix: str                    #: deploy repository URLs starting with this use this forge
    kind: str                          #: github | gitlab | gitea
    api_url: str
    repository: str                    #: org/repo (GitHub, Gitea) or group/project (GitLab)
    token_env: str | None = None
    token_file: str | None = None
    app_id: str | None = None          #: GitHub App instead of a token (all three together)
    app_private_key_file: str | None = None
    app_installation_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class WebhookSettings:
    secret_env: str | None = None      #: shared secret / HMAC key source
    secret_file: str | None = None
    max_body_bytes: int = 1 << 20


@dataclass(frozen=True, kw_only=True)
class Settings:
    interval: float = 120.0            #: seconds between polls
    jitter: float = 10.0               #: up to this many seconds added to each interval
    cache_dir: str = field(default_factory=lambda: str(Path.home() / ".cache" / "image-updater"))
    """Working clones of deploy repositories live here (the container uses a volume)."""
    listen: str = "0.0.0.0:8080"       #: the HTTP server (metrics, health, webhooks)
    log_format: str = "text"           #: text | json
    log_level: str = "info"
    dry_run: bool = False
    registries: tuple[RegistrySettings, ...] = ()
    git: GitSettings = field(default_factory=GitSettings)
    forges: tuple[ForgeSettings, ...] = ()
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)

    def registry(self, host: str) -> RegistrySettings:
        for reg in self.registries:
            if reg.host == host:
                return reg
        return RegistrySettings(host=host)

    def forge_for(self, url: str) -> ForgeSettings | None:
        matches = [f for f in self.forges if url.startswith(f.url_prefix)]
        return max(matches, key=lambda f: len(f.url_prefix)) if matches else None


def secret_sources(settings: Settings) -> tuple[list[str], list[str]]:
    """(environment variable names, file paths) that hold secrets, for log masking."""
    envs: list[str] = []
    files: list[str] = []
    for reg in settings.registries:
        envs += [reg.credentials.password_env or ""]
        files += [reg.credentials.password_file or "", reg.credentials.docker_config or ""]
    envs += [settings.git.token_env or "", settings.webhooks.secret_env or ""]
    files += [settings.git.token_file or "", settings.webhooks.secret_file or ""]
    for forge in settings.forges:
        envs.append(forge.token_env or "")
        files += [forge.token_file or "", forge.app_private_key_file or ""]
    return [e for e in envs if e], [f for f in files if f]


_ENV = {
    "IMAGE_UPDATER_INTERVAL": ("interval", float),
    "IMAGE_UPDATER_LISTEN": ("listen", str),
    "IMAGE_UPDATER_CACHE_DIR": ("cache_dir", str),
    "IMAGE_UPDATER_LOG_FORMAT": ("log_format", str),
    "IMAGE_UPDATER_LOG_LEVEL": ("log_level", str),
}


def load_settings(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``path`` (None: defaults only), then apply environment overrides."""
    raw: dict[str, Any] = {}
    where = str(path) if path else "<defaults>"
    if path is not None:
        try:
            raw = YAML(typ="safe").load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, YAMLError) as exc:
            raise ConfigError(f"cannot read settings file {where}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"settings file {where} must be a mapping at the top level.")
    settings = _build(Settings, raw, where, "")
    return _apply_env(settings, os.environ if environ is None else environ)


def _apply_env(settings: Settings, environ: Mapping[str, str]) -> Settings:
    for var, (name, kind) in _ENV.items():
        if var in environ:
            try:
                settings = replace(settings, **{name: kind(environ[var])})
            except ValueError as exc:
                raise ConfigError(f"environment variable {var}={environ[var]!r} is not a valid "
                                  f"{kind.__name__}.") from exc
    git = settings.git
    if "IMAGE_UPDATER_GIT_AUTHOR_NAME" in environ:
        git = replace(git, author_name=environ["IMAGE_UPDATER_GIT_AUTHOR_NAME"])
    if "IMAGE_UPDATER_GIT_AUTHOR_EMAIL" in environ:
        git = replace(git, author_email=environ["IMAGE_UPDATER_GIT_AUTHOR_EMAIL"])
    settings = replace(settings, git=git)
    if settings.log_format not in ("text", "json"):
        raise ConfigError(f"log_format {settings.log_format!r} is not supported; use text or json.")
    return settings


_NESTED: dict[str, Any] = {
    "credentials": CredentialsSettings, "ecr": EcrSettings, "git": GitSettings,
    "webhooks": WebhookSettings,
}
_LISTS: dict[str, Any] = {"registries": RegistrySettings, "forges": ForgeSettings}


def _build(cls: Any, raw: Any, where: str, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix or 'settings'} must be a mapping.")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        import difflib

        key = unknown[0]
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = (f" Did you mean '{close[0]}'?" if close
                else f" Known keys: {', '.join(sorted(known))}.")
        raise ConfigError(f"{where}: unknown key '{prefix}{key}'.{hint}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _NESTED and value is not None:
            kwargs[name] = _build(_NESTED[name], value, where, f"{prefix}{name}.")
        elif name in _LISTS:
            if not isinstance(value, list):
                raise ConfigError(f"{where}: {prefix}{name} must be a list.")
            kwargs[name] = tuple(_build(_LISTS[name], item, where, f"{prefix}{name}[{i}].")
                                 for i, item in enumerate(value))
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {prefix or 'settings'}: {exc}") from exc
