"""How git authenticates to the deploy remote, without a secret ever reaching argv or a message.

Three options, built with the class methods of :class:`GitAuth`:

* ``GitAuth.none()``: anonymous (git://, file paths, or a remote that needs no login);
* ``GitAuth.ssh(key_file=…, known_hosts_file=…)``: one private key, strict host key checking;
* ``GitAuth.token(token_file=… | token_env=…)``: an HTTPS token given to git by a credential
  helper that echoes an environment variable of the git child process;
* ``GitAuth.minted(mint=…, source=…)``: the same helper, with a token a callable returns at
  each git command (a GitHub App installation token: the wiring passes the forge adapter's
  token source in, so gitops never imports forge, and a token renewed before its expiry
  reaches git on the next command).

Everything is handed to git through the child's *environment* (``GIT_CONFIG_COUNT`` /
``GIT_CONFIG_KEY_n`` / ``GIT_CONFIG_VALUE_n`` for configuration, ``GIT_SSH_COMMAND`` for ssh),
because ``/proc/<pid>/cmdline`` is readable by every local user while ``/proc/<pid>/environ``
is not. The token itself is read from its file or variable at each call by
``image_updater.secrets`` (so a rotated token is picked up without a restart, and it is added
to the :class:`SecretRegistry` every log line and git error message is masked with).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from image_updater.errors import ConfigError
from image_updater.secrets import SecretRegistry, read_secret_env, read_secret_file

AuthKind = Literal["none", "ssh", "token", "minted"]

#: the variables that carry the credential to the helper; names, never values, appear in argv
TOKEN_VAR = "IMAGE_UPDATER_GIT_TOKEN"
USERNAME_VAR = "IMAGE_UPDATER_GIT_USERNAME"

# A helper that answers only ``get`` (git also calls ``store``/``erase``) from the environment.
# Single-quoted variable expansions are done by the helper's shell, not by us.
_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    f'echo "username=${USERNAME_VAR}"; echo "password=${TOKEN_VAR}"; }}; f'
)

_USERNAME_RE = re.compile(r"[A-Za-z0-9._@+-]{1,128}")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True, kw_only=True)
class GitAuth:
    """Credentials for the deploy remote. Build with :meth:`none`, :meth:`ssh`, :meth:`token`
    or :meth:`minted`."""

    kind: AuthKind = "none"
    #: ssh: the private key file (``-i``); only this key is offered (``IdentitiesOnly``)
    ssh_key_file: Path | None = None
    #: ssh: the known_hosts file the server key must be in; unknown hosts are refused
    known_hosts_file: Path | None = None
    #: token: a file holding the token (trailing line endings ignored); preferred over env
    token_file: Path | None = None
    #: token: the name of an environment variable of *this* process holding the token
    token_env: str | None = None
    #: token: the HTTPS user name; forges accept any non-empty name with a token
    username: str = "x-access-token"
    #: minted: returns a valid token at each call (it caches and renews it itself)
    mint: Callable[[], str] | None = field(default=None, compare=False, repr=False)
    #: minted: what mints the token, for messages (e.g. "GitHub App 12 (installation 34, …)")
    mint_source: str | None = None
    #: token, minted: where each token read is added, for masking (required for tokens)
    secrets: SecretRegistry | None = field(default=None, compare=False, repr=False)

    @classmethod
    def none(cls) -> GitAuth:
        return cls(kind="none")

    @classmethod
    def ssh(cls, *, key_file: Path | str, known_hosts_file: Path | str) -> GitAuth:
        return cls(kind="ssh", ssh_key_file=Path(key_file), known_hosts_file=Path(known_hosts_file))

    @classmethod
    def token(cls, *, secrets: SecretRegistry, token_file: Path | str | None = None,
              token_env: str | None = None, username: str = "x-access-token") -> GitAuth:
        return cls(kind="token", token_file=Path(token_file) if token_file else None,
                   token_env=token_env, username=username, secrets=secrets)

    @classmethod
    def minted(cls, *, mint: Callable[[], str], source: str, secrets: SecretRegistry,
               username: str = "x-access-token") -> GitAuth:
        """A token from ``mint``, called at each network git command (never cached here)."""
        return cls(kind="minted", mint=mint, mint_source=source, username=username,
                   secrets=secrets)

    def __post_init__(self) -> None:
        if self.kind == "ssh" and (self.ssh_key_file is None or self.known_hosts_file is None):
            raise ConfigError(
                "SSH git authentication needs both a private key file and a known_hosts file; "
                "set both so the server's host key can be checked."
            )
        if self.kind == "token":
            if self.secrets is None:  # a programming error, not a settings one
                raise TypeError("GitAuth.token() needs the SecretRegistry the token is added to")
            self._check_token_settings()
        if self.kind == "minted":
            if self.secrets is None or self.mint is None or not self.mint_source:
                raise TypeError("GitAuth.minted() needs a mint callable, its description and "
                                "the SecretRegistry the token is added to")
            self._check_username()

    def _check_token_settings(self) -> None:
        if (self.token_file is None) == (self.token_env is None):
            raise ConfigError(
                "HTTPS token git authentication needs exactly one of a token file or the name of "
                "an environment variable holding the token; set one of them."
            )
        if self.token_env is not None and not _ENV_NAME_RE.fullmatch(self.token_env):
            raise ConfigError(
                f"The token environment variable name {self.token_env!r} is not a valid "
                "variable name; use letters, digits and underscores."
            )
        self._check_username()

    def _check_username(self) -> None:
        if not _USERNAME_RE.fullmatch(self.username):
            raise ConfigError(
                "The HTTPS user name for git must be 1-128 letters, digits or ._@+- characters; "
                "forges accept e.g. 'x-access-token' or 'oauth2' with a token."
            )

    def describe(self) -> str:
        """Which credential to check, for messages: names a file or variable, never a value."""
        if self.kind == "ssh":
            return (f"the SSH key {self.ssh_key_file} and the host keys in "
                    f"{self.known_hosts_file}")
        if self.kind == "token":
            where = (f"the token file {self.token_file}" if self.token_file is not None
                     else f"the token in environment variable {self.token_env}")
            return f"{where} (user name {self.username!r})"
        if self.kind == "minted":
            return f"the token minted by {self.mint_source} (user name {self.username!r})"
        return "the remote's access rules (no credentials are configured)"

    def config(self) -> list[tuple[str, str]]:
        """git configuration for the child (passed as ``GIT_CONFIG_KEY_n``, not as ``-c``)."""
        if self.kind not in ("token", "minted"):
            return []
        # An empty helper first resets helpers from the user's or system configuration, so
        # git asks ours only and never a keyring or a terminal.
        return [("credential.helper", ""), ("credential.helper", _HELPER)]

    def environment(self) -> dict[str, str]:
        """Variables for the git child process; for tokens this includes the token itself."""
        if self.kind == "token":
            return {USERNAME_VAR: self.username, TOKEN_VAR: self._read_token()}
        if self.kind == "minted":
            return {USERNAME_VAR: self.username, TOKEN_VAR: self._minted_token()}
        if self.kind == "ssh":
            return {"GIT_SSH_COMMAND": self.ssh_command()}
        return {}

    def ssh_command(self) -> str:
        assert self.ssh_key_file is not None and self.known_hosts_file is not None
        return " ".join([
            "ssh", "-i", shlex.quote(str(self.ssh_key_file)),
            "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "UserKnownHostsFile=" + shlex.quote(str(self.known_hosts_file)),
            # never prompt for a passphrase or a password: a daemon has nobody to answer
            "-o", "BatchMode=yes",
        ])

    def _read_token(self) -> str:
        assert self.secrets is not None  # GitAuth.token() requires it
        if self.token_file is not None:
            token = read_secret_file(self.token_file, setting="git.token_file",
                                     secrets=self.secrets)
        else:
            assert self.token_env is not None
            token = read_secret_env(self.token_env, setting="git.token_env",
                                    secrets=self.secrets)
        if any(c in token for c in "\r\n"):
            source = self.token_file or f"environment variable {self.token_env}"
            raise ConfigError(
                f"The git token from {source} spans several lines; put exactly one token "
                "there."
            )
        return token

    def _minted_token(self) -> str:
        assert self.mint is not None and self.secrets is not None  # GitAuth.minted() checks
        token = self.mint()
        self.secrets.add(token)  # the minter adds it too; masking must not depend on that
        if not token or any(c in token for c in "\r\n"):
            raise ConfigError(
                f"The git token minted by {self.mint_source} is empty or spans several "
                "lines, so git cannot send it; check the token service's answer."
            )
        return token


def redact_url(url: str) -> str:
    """``url`` without its userinfo (``https://user:pw@host/x`` → ``https://host/x``).

    scp-like ssh addresses (``git@host:org/repo.git``) keep their user name: it is not secret
    and tells the reader which account is used.
    """
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def url_has_password(url: str) -> bool:
    return "://" in url and urlsplit(url).password is not None
