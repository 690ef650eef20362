"""Global settings: registries, git, forges, schedule, server. One YAML file + env overrides.

Over 450 lines: one dataclass per settings block (registries, git and its signing and GitHub
App, forges, webhooks, limits, templates, notifications), each beside the load-time checks
of its fields, so a reader finds a setting and its rule in one place.

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
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from image_updater.config.api import ApiSettings, api_secret_files, load_api
from image_updater.config.server import ServerSettings, check_server
from image_updater.config.status_page import StatusPageSettings, check_status_page
from image_updater.errors import ConfigError
from image_updater.model import DEFAULT_FILE_BYTES

if TYPE_CHECKING:
    from image_updater.config.templates import MessageTemplates


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
class SigningSettings:
    """``git.signing``: sign every commit image-updater makes (README, "Signed commits")."""

    format: str                        #: ssh | openpgp
    key_file: str
    """The private key: an SSH key without a passphrase, or an exported OpenPGP secret key
    (``gpg --armor --export-secret-keys``). Read at each commit, so rotation needs no restart."""
    passphrase_file: str | None = None  #: openpgp only: the file holding the key's passphrase


@dataclass(frozen=True, kw_only=True)
class GitHubAppGitSettings:
    """``git.github_app``: push and fetch over HTTPS with a GitHub App installation token.

    The token is minted from the App's private key (read at each mint), renewed before it
    expires, and handed to git through the environment of each git command.
    """

    app_id: str                        #: the App's numeric id (its settings page)
    installation_id: str               #: the installation on the deploy repositories' owner
    private_key_file: str              #: the App's PEM private key (a mounted secret)
    api_url: str = "https://api.github.com"  #: GitHub Enterprise: https://HOST/api/v3


@dataclass(frozen=True, kw_only=True)
class GitSettings:
    author_name: str = "image-updater"
    author_email: str = "image-updater@localhost"
    ssh_key_file: str | None = None    #: private key for ssh:// and git@ URLs
    known_hosts_file: str | None = None  #: required with ssh_key_file: hosts are verified
    token_file: str | None = None      #: HTTPS token (never placed in URLs)
    token_env: str | None = None
    username: str = "x-access-token"   #: HTTPS username sent with the token
    github_app: GitHubAppGitSettings | None = None
    """A GitHub App's installation token for HTTPS git, instead of ssh_key_file or a token."""
    max_push_attempts: int = 5
    lock_timeout: float = 300.0        #: seconds to wait while another process uses a clone
    signing: SigningSettings | None = None  #: unset: commits are not signed


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
class LimitSettings:
    """Size caps on files read from people and repositories, checked before parsing: a
    pure-Python YAML parser takes minutes over a multi-megabyte file."""

    policy_file_bytes: int = DEFAULT_FILE_BYTES  #: largest policy file accepted, in bytes
    values_file_bytes: int = DEFAULT_FILE_BYTES  #: largest values file read or written


SINK_KINDS = ("slack", "teams", "cloudevents")


@dataclass(frozen=True, kw_only=True)
class NotificationSinkSettings:
    """``notifications.sinks[]``: one receiver. Its URL is a secret (anyone holding it can
    post to the channel): name the file or variable that holds it, exactly one of them."""

    name: str                          #: what routes, logs and metrics call it
    kind: str                          #: slack | teams | cloudevents
    url_file: str | None = None        #: file holding the webhook URL (k8s secret mount)
    url_env: str | None = None         #: env var holding the webhook URL
    secret_file: str | None = None     #: cloudevents: HMAC-SHA256 key (required for it)
    secret_env: str | None = None
    source: str = "image-updater"      #: cloudevents: the events' ``source`` (a URI-reference)
    timeout: float = 10.0              #: seconds per request
    max_attempts: int = 5              #: attempts per event (connection errors, 408/429/5xx)
    backoff: float = 2.0               #: seconds before the first retry; doubles, up to 60


@dataclass(frozen=True, kw_only=True)
class NotificationRouteSettings:
    """``notifications.routes[]``: which events go to ``sink``; an empty list means all."""

    sink: str                          #: a sink's name
    apps: tuple[str, ...] = ()
    envs: tuple[str, ...] = ()
    events: tuple[str, ...] = ()       #: event kinds, e.g. environment.updated (README)


@dataclass(frozen=True, kw_only=True)
class NotificationSettings:
    sinks: tuple[NotificationSinkSettings, ...] = ()
    #: no routes: every event goes to every sink
    routes: tuple[NotificationRouteSettings, ...] = ()
    failing_after: float = 3600.0      #: seconds an environment fails before people are told
    queue_size: int = 100              #: events waiting per sink; more are dropped (counted)
    flush_timeout: float = 5.0         #: seconds a command (promote, hold…) waits to deliver


@dataclass(frozen=True, kw_only=True)
class TemplateSettings:
    """Jinja2 templates for commit messages and pull requests (README: Templates). Each is
    set inline or as a file (``…_file``), not both; unset keeps the built-in text. The
    trailers are always appended after the rendered text."""

    commit_subject: str | None = None       #: one line; longer output is joined into one
    commit_subject_file: str | None = None
    commit_body: str | None = None          #: the paragraphs between subject and trailers
    commit_body_file: str | None = None
    pull_request_title: str | None = None   #: one line
    pull_request_title_file: str | None = None
    pull_request_body: str | None = None    #: Markdown, before the trailer block
    pull_request_body_file: str | None = None


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
    """Plan and log every change but write nothing (no commit, push or pull request), in
    the daemon and in ``once`` alike; ``once --dry-run`` sets it for one run."""
    registries: tuple[RegistrySettings, ...] = ()
    git: GitSettings = field(default_factory=GitSettings)
    forges: tuple[ForgeSettings, ...] = ()
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    templates: TemplateSettings = field(default_factory=TemplateSettings)
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    api: ApiSettings = field(default_factory=ApiSettings)  #: parsed in config/api.py
    server: ServerSettings = field(default_factory=ServerSettings)  #: the HTTP port's limits
    status_page: StatusPageSettings = field(default_factory=StatusPageSettings)

    def registry(self, host: str) -> RegistrySettings:
        for reg in self.registries:
            if reg.host == host:
                return reg
        return RegistrySettings(host=host)

    def forge_for(self, url: str) -> ForgeSettings | None:
        matches = [f for f in self.forges if url.startswith(f.url_prefix)]
        return max(matches, key=lambda f: len(f.url_prefix)) if matches else None


Source = tuple[str, str | None]  # (the settings key, the variable name or file path it holds)


def secret_sources(settings: Settings) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(settings key, environment variable name) and (settings key, file path) pairs of every
    secret the settings point at, for log masking; keys name the setting in messages."""
    envs: list[Source] = []
    files: list[Source] = []
    for reg in settings.registries:
        where = f"registries[{reg.host}].credentials"
        envs.append((f"{where}.password_env", reg.credentials.password_env))
        files += [(f"{where}.password_file", reg.credentials.password_file),
                  (f"{where}.docker_config", reg.credentials.docker_config)]
    envs += [("git.token_env", settings.git.token_env),
             ("webhooks.secret_env", settings.webhooks.secret_env)]
    if settings.git.signing is not None:
        files += [("git.signing.key_file", settings.git.signing.key_file),
                  ("git.signing.passphrase_file", settings.git.signing.passphrase_file)]
    if settings.git.github_app is not None:
        files.append(("git.github_app.private_key_file",
                      settings.git.github_app.private_key_file))
    files += [("git.token_file", settings.git.token_file),
              ("webhooks.secret_file", settings.webhooks.secret_file)]
    for forge in settings.forges:
        where = f"forges[{forge.repository}]"
        envs.append((f"{where}.token_env", forge.token_env))
        files += [(f"{where}.token_file", forge.token_file),
                  (f"{where}.app_private_key_file", forge.app_private_key_file)]
    for sink in settings.notifications.sinks:
        where = f"notifications.sinks[{sink.name}]"
        envs += [(f"{where}.url_env", sink.url_env), (f"{where}.secret_env", sink.secret_env)]
        files += [(f"{where}.url_file", sink.url_file),
                  (f"{where}.secret_file", sink.secret_file)]
    files += api_secret_files(settings.api)
    return [(k, v) for k, v in envs if v], [(k, v) for k, v in files if v]


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
            # round trip: keys carry their line and column, for the error messages
            raw = YAML(typ="rt").load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, ValueError, RecursionError, YAMLError) as exc:  # ValueError: bad
            # UTF-8, or a constructor refusing tagged nonsense such as ``!!int x``
            raise ConfigError(f"cannot read settings file {where}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"settings file {where} must be a mapping at the top level.")
    raw_api = raw.pop("api", None) if isinstance(raw, dict) else None  # config/api.py's block
    settings = replace(_build(Settings, raw, where, ""), api=load_api(raw_api, where))
    # compiled and rendered once now, so a template's error stops the start, not a commit
    message_templates(settings, origins=_template_origins(raw, where),
                      block_starts=_template_block_starts(raw, where))
    _check_git_auth(settings.git, where)
    _check_notifications(settings.notifications, where)
    check_server(settings.server, raw.get("server"), where)
    check_status_page(settings.status_page, raw.get("status_page"), where,
                      identities=settings.api.enabled)
    return _apply_env(settings, os.environ if environ is None else environ)


def message_templates(settings: Settings, *, origins: Mapping[str, str] | None = None,
                      block_starts: Mapping[str, tuple[str, int]] | None = None
                      ) -> MessageTemplates:
    """The settings' templates, compiled and rendered once against a sample change."""
    from dataclasses import asdict

    # imported here: Jinja2 is loaded only by the settings that use templates
    from image_updater.config.templates import NO_TEMPLATES, compile_templates

    sources = asdict(settings.templates)
    if not any(v is not None for v in sources.values()):
        return NO_TEMPLATES
    return compile_templates(sources, origins=origins, block_starts=block_starts)


def _template_origins(raw: Mapping[str, Any], where: str) -> dict[str, str]:
    """``file:line:column`` of each key of the ``templates`` block, for error messages."""
    block = raw.get("templates")
    if not isinstance(block, dict):
        return {}
    return {str(key): _at(where, block, key) for key in block}


def _template_block_starts(raw: Mapping[str, Any], where: str) -> dict[str, tuple[str, int]]:
    """(file, line) of the first line of each inline template written as a ``|`` block
    scalar: the line after its key, so an error's template line maps to the file (a folded
    ``>`` block joins lines, so its lines do not map)."""
    from ruamel.yaml.scalarstring import LiteralScalarString

    block = raw.get("templates")
    if not isinstance(block, dict):
        return {}
    starts = {}
    for key, value in block.items():
        if isinstance(value, LiteralScalarString):
            try:
                line = block.lc.key(key)[0]  # type: ignore[attr-defined]  # ruamel, untyped
            except (AttributeError, KeyError, TypeError):
                continue
            starts[str(key)] = (where, line + 2)  # 0-based key line; the text starts below
    return starts


def _check_git_auth(git: GitSettings, where: str) -> None:
    """One way to authenticate git, and a GitHub App whose ids and API URL can be used."""
    app = git.github_app
    if app is None:
        return
    others = [name for name in ("ssh_key_file", "token_file", "token_env")
              if getattr(git, name)]
    if others:
        raise ConfigError(
            f"settings file {where}: git.github_app cannot be combined with git."
            f"{', git.'.join(others)}; keep one way for git to authenticate.")
    for name in ("app_id", "installation_id"):
        value = getattr(app, name)
        if not value.isdigit():
            raise ConfigError(
                f"settings file {where}: git.github_app.{name} must be the number shown on "
                f"the App's pages, not {value[:40]!r}.")
    if not re.fullmatch(r"https?://[^\s/@?#]+(/[^\s?#@]*)?", app.api_url):
        raise ConfigError(
            f"settings file {where}: git.github_app.api_url must be an http(s) URL without "
            "credentials, e.g. https://api.github.com or https://HOST/api/v3 (Enterprise).")
    if app.api_url.startswith("http://") and not re.match(
            r"http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(/|$)", app.api_url):
        raise ConfigError(
            f"settings file {where}: git.github_app.api_url {app.api_url[:80]!r} is plain "
            "http: the App's signed JWT would mint installation tokens for anyone on the "
            "path. Use https:// (http:// only to this machine, for tests).")


def _apply_env(settings: Settings, environ: Mapping[str, str]) -> Settings:
    for var, (name, kind) in _ENV.items():
        if var in environ:
            try:
                value = kind(environ[var])
            except ValueError as exc:
                raise ConfigError(f"environment variable {var}={environ[var]!r} is not a valid "
                                  f"{kind.__name__}.") from exc
            checked = _checked_value(name, value, kind)
            if isinstance(checked, _Wrong):
                raise ConfigError(f"environment variable {var}={environ[var]!r}: {checked.why}.")
            settings = replace(settings, **{name: checked})
    git = settings.git
    if "IMAGE_UPDATER_GIT_AUTHOR_NAME" in environ:
        git = replace(git, author_name=environ["IMAGE_UPDATER_GIT_AUTHOR_NAME"])
    if "IMAGE_UPDATER_GIT_AUTHOR_EMAIL" in environ:
        git = replace(git, author_email=environ["IMAGE_UPDATER_GIT_AUTHOR_EMAIL"])
    settings = replace(settings, git=git)
    if settings.log_format not in ("text", "json"):
        raise ConfigError(f"log_format {settings.log_format!r} is not supported; use text or json.")
    _check_signing(settings.git.signing)
    return settings


def _check_signing(signing: SigningSettings | None) -> None:
    """The choices in ``git.signing``; the key itself is checked when the runtime starts."""
    if signing is None:
        return
    if signing.format not in ("ssh", "openpgp"):
        raise ConfigError(f"git.signing.format {signing.format!r} is not supported; use ssh or "
                          "openpgp.")
    if signing.format == "ssh" and signing.passphrase_file:
        raise ConfigError("git.signing.passphrase_file is set with format ssh; image-updater "
                          "signs without an agent, so use an SSH key without a passphrase.")


_NESTED: dict[str, Any] = {
    "credentials": CredentialsSettings, "ecr": EcrSettings, "git": GitSettings,
    "signing": SigningSettings, "github_app": GitHubAppGitSettings,
    "webhooks": WebhookSettings, "limits": LimitSettings, "templates": TemplateSettings,
    "notifications": NotificationSettings, "server": ServerSettings,
    "status_page": StatusPageSettings,
}
_LISTS: dict[str, Any] = {"registries": RegistrySettings, "forges": ForgeSettings,
                          "sinks": NotificationSinkSettings,
                          "routes": NotificationRouteSettings}


def _check_notifications(notifications: NotificationSettings, where: str) -> None:
    """What the key-by-key check cannot see: kinds, secret sources, and names that refer
    to each other. A mistake here is found at start, not when the first event is lost."""
    from image_updater.notify.events import EVENT_KINDS

    problems: list[str] = []
    names = [s.name for s in notifications.sinks]
    for sink in notifications.sinks:
        at = f"notifications.sinks[{sink.name}]"
        if sink.kind not in SINK_KINDS:
            problems.append(f"{at}.kind: {sink.kind!r} is not known; use one of "
                            f"{', '.join(SINK_KINDS)}")
        if (sink.url_file is None) == (sink.url_env is None):
            problems.append(f"{at}: set exactly one of url_file and url_env (the webhook URL "
                            "is a secret, so it is never written in the settings)")
        if sink.kind == "cloudevents" and sink.secret_file is None and sink.secret_env is None:
            problems.append(f"{at}: a cloudevents sink signs its events; set secret_file or "
                            "secret_env to the HMAC key")
        if names.count(sink.name) > 1:
            problems.append(f"{at}.name: {sink.name!r} names two sinks; give each its own name")
    for i, route in enumerate(notifications.routes):
        if route.sink not in names:
            problems.append(f"notifications.routes[{i}].sink: no sink is named {route.sink!r}; "
                            f"known sinks: {', '.join(names) or 'none'}")
        unknown = sorted(set(route.events) - set(EVENT_KINDS))
        if unknown:
            problems.append(f"notifications.routes[{i}].events: {', '.join(unknown)} not known; "
                            f"use some of {', '.join(EVENT_KINDS)}")
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in settings file {where}:\n"
                          + "\n".join(f"  {where}: {p}" for p in dict.fromkeys(problems)))


#: numeric settings and the smallest value that makes sense for each
_MINIMUM: dict[str, tuple[float, bool]] = {  # name -> (bound, bound itself allowed)
    "interval": (0, False), "jitter": (0, True), "timeout": (0, False),
    "max_concurrency": (1, True), "requests_per_second": (0, True), "max_retries": (0, True),
    "max_attempts": (1, True), "max_push_attempts": (1, True), "max_body_bytes": (1, True),
    "lock_timeout": (0, True),
    "policy_file_bytes": (1, True), "values_file_bytes": (1, True),
    "failing_after": (0, True), "queue_size": (1, True), "flush_timeout": (0, True),
    "backoff": (0, True),
}


def _build(cls: Any, raw: Any, where: str, prefix: str) -> Any:
    """``cls`` from a parsed YAML mapping; every problem in the file is reported at once."""
    problems: list[str] = []
    built = _build_into(cls, raw, where, prefix, problems, None)
    if problems:
        import re

        def position(problem: str) -> tuple[int, int]:
            found = re.match(rf"{re.escape(where)}:(\d+):(\d+)", problem)
            return (int(found[1]), int(found[2])) if found else (0, 0)

        problems.sort(key=position)
        raise ConfigError(f"{len(problems)} problem(s) in settings file {where}:\n"
                          + "\n".join(f"  {p}" for p in problems))
    return built


def _at(where: str, node: Any, key: Any) -> str:  # node: Any, as ruamel's types are untyped
    """``file:line:column`` of ``key`` in a round-trip mapping or sequence, when known."""
    try:
        lc = node.lc  # ruamel's position record of a round-trip mapping or sequence
        line, column = lc.key(key) if isinstance(node, dict) else lc.item(key)
    except (AttributeError, KeyError, IndexError, TypeError):
        return where
    return f"{where}:{line + 1}:{column + 1}"


def _build_into(cls: Any, raw: Any, where: str, prefix: str, problems: list[str],
                at: str | None) -> Any:
    import difflib
    import typing

    if not isinstance(raw, dict):
        kind = "a list" if isinstance(raw, list) else repr(raw)[:40]
        problems.append(f"{at or where}: {prefix.rstrip('.') or 'settings'}: must be a mapping "
                        f"of keys to values, not {kind}")
        return None
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = (f"did you mean '{close[0]}'?" if close
                    else f"known keys: {', '.join(sorted(known))}")
            problems.append(f"{_at(where, raw, key)}: {prefix}{key}: unknown key ({hint})")
    missing = [f.name for f in fields(cls) if f.name not in raw and _required(f)]
    for name in missing:
        problems.append(f"{at or where}: {prefix}{name}: required key is missing")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in known:
            continue
        here, label = _at(where, raw, name), f"{prefix}{name}"
        if name in _NESTED:
            if value is not None:
                kwargs[name] = _build_into(_NESTED[name], value, where, f"{label}.", problems,
                                           here)
        elif name in _LISTS:
            if not isinstance(value, list):
                problems.append(f"{here}: {label}: must be a list (one '- ' item per entry)")
                continue
            kwargs[name] = tuple(
                _build_into(_LISTS[name], item, where, f"{label}[{i}].", problems,
                            _at(where, value, i)) for i, item in enumerate(value))
        else:
            checked = _checked_value(name, value, hints[name])
            if isinstance(checked, _Wrong):
                problems.append(f"{here}: {label}: {checked.why}")
            else:
                kwargs[name] = checked
    if problems:
        return None
    return cls(**kwargs)


def _required(f: Any) -> bool:
    from dataclasses import MISSING

    return f.default is MISSING and f.default_factory is MISSING


@dataclass(frozen=True)
class _Wrong:
    why: str


def _checked_value(name: str, value: Any, hint: Any) -> Any:
    """``value`` if YAML gave the type the field needs (ids may be numbers), else _Wrong."""
    optional = hint in (str | None, int | None, float | None, bool | None)
    if value is None:
        return None if optional else _Wrong("must have a value (it is empty)")
    if hint == tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return _Wrong(f"must be a list of strings, not {repr(value)[:60]}")
        return tuple(str(v) for v in value)
    base = {str | None: str, int | None: int, float | None: float,
            bool | None: bool}.get(hint, hint)
    shown = repr(value)[:60]
    if base is bool:
        if type(value).__name__ == "ScalarBoolean":  # ruamel's bool when it carries an anchor
            value = bool(value)
        if not isinstance(value, bool):
            return _Wrong(f"must be true or false, not {shown} (write it without quotes)")
        return value
    if base is str:
        if isinstance(value, int) and not isinstance(value, bool):
            if name == "account":  # AWS account ids may start with 0, which YAML drops
                return _Wrong(f"write the 12-digit account id in quotes ('{value:012d}'?): "
                              "unquoted, YAML reads it as a number and drops leading zeros")
            return str(value)  # numeric ids (GitHub App ids) written without quotes
        if not isinstance(value, str):
            return _Wrong(f"must be a string, not {shown}")
        return str(value)
    if base in (int, float):
        import math

        number_ok = isinstance(value, int | float) and not isinstance(value, bool) and \
            math.isfinite(value)
        if not number_ok or (base is int and not isinstance(value, int)):
            return _Wrong(f"must be {'a whole number' if base is int else 'a number'}, "
                          f"not {shown}")
        bound, inclusive = _MINIMUM.get(name, (float("-inf"), True))
        if value < bound or (value == bound and not inclusive):
            return _Wrong(f"must be {'at least' if inclusive else 'more than'} {bound:g}, "
                          f"not {shown}")
        return base(value)
    return value
