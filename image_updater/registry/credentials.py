"""Where registry credentials come from. Every source answers ``(username, password) | None``.

Sources are asked again on every token fetch, so rotated Kubernetes secrets and edited
docker config files take effect without a restart. Files and variables are read by
``image_updater.secrets`` (one stripping rule, ConfigError naming file and setting), and
every value read is added to the source's :class:`SecretRegistry` so no log line shows it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from image_updater.errors import ConfigError
from image_updater.registry.reference import DOCKER_HUB_ALIASES
from image_updater.secrets import SecretRegistry, read_secret_env, read_secret_file

Credentials = tuple[str, str]


class CredentialSource(Protocol):
    def get(self) -> Credentials | None:
        """The current credentials, or None for anonymous access."""
        ...

    def describe(self) -> str:
        """Where the credentials come from, for messages (never the secret itself)."""
        ...


@dataclass(frozen=True, kw_only=True)
class Anonymous:
    """No credentials: public repositories and anonymous token grants."""

    def get(self) -> Credentials | None:
        return None

    def describe(self) -> str:
        return "no credentials (anonymous access)"


@dataclass(frozen=True, kw_only=True)
class EnvCredentials:
    """A fixed username and a password read from an environment variable at each use."""

    username: str
    password_env: str
    secrets: SecretRegistry = field(compare=False, repr=False)
    #: the environment to read; the process environment when None (a parameter for tests)
    environ: Mapping[str, str] | None = field(default=None, compare=False, repr=False)

    def get(self) -> Credentials | None:
        password = read_secret_env(self.password_env, setting="credentials.password_env",
                                   secrets=self.secrets, environ=self.environ)
        return self.username, password

    def describe(self) -> str:
        return f"user {self.username!r} with the password in environment variable " \
               f"{self.password_env}"


@dataclass(frozen=True, kw_only=True)
class FileCredentials:
    """Username and password files, e.g. a Kubernetes secret mounted as a volume.

    The files are re-read on every call because kubelet rewrites them on rotation.
    """

    password_file: Path
    secrets: SecretRegistry = field(compare=False, repr=False)
    username_file: Path | None = None
    username: str | None = None

    def __post_init__(self) -> None:
        if (self.username is None) == (self.username_file is None):
            raise ConfigError(
                f"credentials with password file {self.password_file} need exactly one of "
                "'username' or 'username_file'."
            )

    def get(self) -> Credentials | None:
        if self.username_file is not None:
            user = read_secret_file(self.username_file, setting="credentials.username_file",
                                    secrets=self.secrets)
        else:
            user = self.username or ""
        return user, read_secret_file(self.password_file, setting="credentials.password_file",
                                      secrets=self.secrets)

    def describe(self) -> str:
        user = self.username_file if self.username_file is not None else repr(self.username)
        return f"username {user} and password file {self.password_file}"


@dataclass(frozen=True, kw_only=True)
class DockerConfigCredentials:
    """The ``auths`` section of a docker ``config.json`` (``~/.docker/config.json`` or a
    ``kubernetes.io/dockerconfigjson`` secret), matched by registry host.

    Credential helpers (``credsStore``/``credHelpers``) are not run: they need programs
    and a desktop keyring that a daemon does not have.
    """

    path: Path
    host: str
    secrets: SecretRegistry = field(compare=False, repr=False)

    def get(self) -> Credentials | None:
        auths = self._auths()
        entry = _find_entry(auths, self.host)
        if entry is None:
            return None
        key, value = entry
        credentials = _entry_credentials(value, f"entry {key!r} of {self.path}")
        if credentials is not None:
            self.secrets.add(credentials[1])
            if isinstance(value.get("auth"), str):
                self.secrets.add(value["auth"])  # base64 of user:password, as secret as it
        return credentials

    def describe(self) -> str:
        return f"the auths entry for {self.host} in docker config {self.path}"

    def _auths(self) -> Mapping[str, Any]:
        text = read_secret_file(self.path, setting="credentials.docker_config",
                                secrets=self.secrets)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"docker config {self.path} is not valid JSON (line {exc.lineno}, column "
                f"{exc.colno}); regenerate it with 'docker login' or kubectl create secret "
                "docker-registry."
            ) from exc
        auths = data.get("auths", {}) if isinstance(data, dict) else None
        if not isinstance(auths, dict):
            raise ConfigError(
                f"docker config {self.path} has no 'auths' object; expected "
                '{"auths": {"HOST": {"auth": "BASE64(user:password)"}}}.'
            )
        return auths


def docker_config_secrets(text: str) -> list[str]:
    """Every credential in a Docker ``config.json`` (raw ``auth`` values, the passwords and
    tokens they hold), for log masking; nothing when the text is not such a file."""
    try:
        auths = json.loads(text).get("auths")
    except (ValueError, AttributeError):
        return []
    found: list[str] = []
    for key, value in auths.items() if isinstance(auths, dict) else ():
        if not isinstance(value, dict):
            continue
        found += [v for k in ("auth", "registrytoken") if isinstance(v := value.get(k), str)]
        try:
            credentials = _entry_credentials(value, str(key))
        except ConfigError:
            continue  # reported, with a fix, by the registry that uses this entry
        if credentials is not None:
            found.append(credentials[1])
    return found


def host_of_config_key(key: str) -> str:
    """``https://index.docker.io/v1/`` → ``index.docker.io``: docker accepts URLs as keys."""
    text = key.strip().lower()
    for scheme in ("https://", "http://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    return text.split("/", 1)[0]


def _same_registry(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    return a == b or (a in DOCKER_HUB_ALIASES and b in DOCKER_HUB_ALIASES)


def _find_entry(auths: Mapping[str, Any], host: str) -> tuple[str, Any] | None:
    # An exact key wins over a URL-shaped key for the same host, as in docker.
    if host in auths:
        return host, auths[host]
    for key, value in auths.items():
        if _same_registry(host_of_config_key(key), host):
            return key, value
    return None


def _entry_credentials(value: Any, where: str) -> Credentials | None:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} is not an object; expected {{\"auth\": \"...\"}}.")
    if value.get("auth"):
        return _decode_auth(value["auth"], where)
    user, password = value.get("username"), value.get("password")
    if isinstance(user, str) and isinstance(password, str) and user and password:
        return user, password
    token = value.get("identitytoken")
    if isinstance(token, str) and token:
        # Registries that issue identity tokens (ACR, Harbor) accept them as the basic
        # password at the token endpoint; docker's placeholder user is used when none is set.
        return (user if isinstance(user, str) and user else "<token>"), token
    return None


def _decode_auth(auth: Any, where: str) -> Credentials:
    hint = "it must be base64 of 'username:password'; run 'docker login' again to rewrite it."
    if not isinstance(auth, str):
        raise ConfigError(f"the 'auth' field of {where} is not a string; {hint}")
    try:
        decoded = base64.b64decode(auth, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"the 'auth' field of {where} is not valid base64; {hint}") from exc
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        raise ConfigError(f"the 'auth' field of {where} has no 'username:' part; {hint}")
    return user, password

