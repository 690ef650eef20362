"""Commit signing: SSH signatures or OpenPGP (GnuPG), with keys that never leave files and fds.

A :class:`CommitSigner` turns ``git.signing`` into what one ``git commit -S`` needs: a few
configuration pairs and environment variables (handed to git through its environment, like
the credentials in :mod:`.credentials`), valid for one :meth:`CommitSigner.session`.

* ``ssh``: the private key file is read at each use (``read_secret_file``: a rotated secret
  is picked up, and its lines are masked in logs), copied with mode 0600 into a fresh private
  directory (``ssh-keygen`` refuses keys other users can read, and a Kubernetes mount is often
  0644), and named by ``user.signingkey``; no agent is used. Keys with a passphrase are refused.
* ``openpgp``: the key file is imported into a private ``GNUPGHOME`` under the cache
  directory (again whenever the file changes). The passphrase, if any, is written with mode
  0600 into a fresh private directory for the session and given to gpg by a wrapper as
  ``--passphrase-fd`` (``--batch --pinentry-mode loopback``): it never reaches argv. The
  agent caches nothing and is stopped after each session, so no process outlives a commit.

:meth:`CommitSigner.check` signs a probe at start, so a missing, unreadable, encrypted or
wrong key, or a wrong passphrase, is a :class:`~image_updater.errors.ConfigError` when the
daemon starts or ``validate --config`` runs, not a failed push at night.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from image_updater.errors import ConfigError, truncate
from image_updater.secrets import SecretRegistry, read_secret_file

SigningFormat = Literal["ssh", "openpgp"]
FORMATS: tuple[str, ...] = ("ssh", "openpgp")

#: the variable that tells the gpg wrapper where this session's passphrase file is
PASSPHRASE_VAR = "IMAGE_UPDATER_GPG_PASSPHRASE_FILE"

# git runs gpg.program with its own arguments; the passphrase goes in on fd 3, never argv.
_GPG_WRAPPER = """#!/bin/sh
# Written by image-updater: gpg for git commit signing, never interactive.
if [ -n "${%(var)s:-}" ]; then
  exec 3<"$%(var)s" || exit 2
  exec %(gpg)s --batch --no-tty --pinentry-mode loopback --passphrase-fd 3 "$@"
fi
exec %(gpg)s --batch --no-tty --pinentry-mode loopback "$@"
"""

# No passphrase (and so no unlocked key) stays cached in the agent between commits.
_AGENT_CONF = "allow-loopback-pinentry\ndefault-cache-ttl 0\nmax-cache-ttl 0\n"

_TIMEOUT = 60.0  # seconds for one gpg or ssh-keygen run


@dataclass(frozen=True)
class SigningSession:
    """What one signed ``git commit`` needs: configuration pairs and environment variables."""

    config: tuple[tuple[str, str], ...]
    env: Mapping[str, str] = field(default_factory=dict)


class CommitSigner:
    """Signs commits with one key; see the module docstring. Thread-safe."""

    def __init__(self, *, format: SigningFormat, key_file: Path | str, home: Path | str,
                 secrets: SecretRegistry, passphrase_file: Path | str | None = None,
                 setting: str = "git.signing") -> None:
        """``home`` is a directory for this signer alone (created 0700): the GnuPG home
        and the per-session private directories live in it."""
        if format not in FORMATS:
            raise ConfigError(f"{setting}.format {format!r} is not supported; use ssh or "
                              "openpgp.")
        if format == "ssh" and passphrase_file is not None:
            raise ConfigError(f"{setting}.passphrase_file is set for an SSH key; image-updater "
                              "signs without an agent, so use an SSH key without a passphrase "
                              "(or the openpgp format).")
        self.format = format
        self.key_file = Path(key_file)
        self.passphrase_file = Path(passphrase_file) if passphrase_file else None
        self.home = Path(home)
        self.secrets = secrets
        self.setting = setting
        self._program = _find("ssh-keygen" if format == "ssh" else "gpg", setting)
        self._lock = threading.Lock()
        self._imported: tuple[str, str] | None = None  # (sha256 of the key text, fingerprint)
        self._active = 0  # sessions in progress: the agent is stopped when the last one ends

    def describe(self) -> str:
        return f"the {self.format} key in {self.key_file} ({self.setting}.key_file)"

    def check(self) -> None:
        """Sign a probe with the key as configured; raise ConfigError saying what is wrong."""
        with self.session() as session:
            config = dict(session.config)
            if self.format == "ssh":
                argv = [self._program, "-Y", "sign", "-n", "git", "-f",
                        config["user.signingkey"]]
            else:  # armored: the signature is read back as text
                argv = [config["gpg.program"], "--armor", "--detach-sign", "--local-user",
                        config["user.signingkey"]]
            self._run(argv, env=session.env, what="signing a test message with")

    @contextmanager
    def session(self) -> Iterator[SigningSession]:
        """The key, read now, ready for ``git commit -S`` until the block ends."""
        key = read_secret_file(self.key_file, setting=f"{self.setting}.key_file",
                               secrets=self.secrets)
        for line in key.splitlines():  # a multi-line key may be quoted one line at a time
            self.secrets.add(line)
        _refuse_public_key(key, self.format, f"{self.setting}.key_file", str(self.key_file))
        self._private(self.home)
        private = Path(tempfile.mkdtemp(prefix="session-", dir=self.home))  # mode 0700
        try:
            if self.format == "ssh":
                yield self._ssh_session(key, private)
            else:
                with self._agent():
                    yield self._openpgp_session(key, private)
        finally:
            shutil.rmtree(private, ignore_errors=True)

    # ---- ssh -------------------------------------------------------------------------------

    def _ssh_session(self, key: str, private: Path) -> SigningSession:
        copy = private / "signing_key"
        _write_private(copy, key + "\n")
        # -P '' fails at once on a key that needs a passphrase, instead of prompting
        self._run([self._program, "-y", "-P", "", "-f", str(copy)], env={},
                  what="reading the private key in", hint="it must be an OpenSSH or PEM private "
                  "key without a passphrase")
        return SigningSession(
            config=(("gpg.format", "ssh"), ("user.signingkey", str(copy)),
                    ("gpg.ssh.program", self._program), ("commit.gpgsign", "true")),
            env={"SSH_AUTH_SOCK": ""})  # the key file only, never an inherited agent

    # ---- openpgp ---------------------------------------------------------------------------

    @property
    def gnupg_home(self) -> Path:
        return self.home / "gnupg"

    def _openpgp_session(self, key: str, private: Path) -> SigningSession:
        fingerprint = self._import(key)
        env = {"GNUPGHOME": str(self.gnupg_home), PASSPHRASE_VAR: ""}  # none inherited
        if self.passphrase_file is not None:
            passphrase = read_secret_file(self.passphrase_file,
                                          setting=f"{self.setting}.passphrase_file",
                                          secrets=self.secrets)
            _write_private(private / "passphrase", passphrase + "\n")
            env[PASSPHRASE_VAR] = str(private / "passphrase")
        return SigningSession(
            config=(("gpg.format", "openpgp"), ("gpg.program", str(self._wrapper())),
                    ("user.signingkey", fingerprint), ("commit.gpgsign", "true")),
            env=env)

    def _import(self, key: str) -> str:
        """Import ``key`` into the private GnuPG home unless done already; its fingerprint."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        with self._lock:
            if self._imported is not None and self._imported[0] == digest:
                return self._imported[1]
            self._private(self.gnupg_home)
            (self.gnupg_home / "gpg-agent.conf").write_text(_AGENT_CONF, encoding="utf-8")
            env = {"GNUPGHOME": str(self.gnupg_home)}
            listing = self._run([self._program, "--batch", "--with-colons", "--import-options",
                                 "show-only", "--import"], env=env, stdin=key,
                                what="reading the OpenPGP key in")
            fingerprint = _secret_key_fingerprint(listing)
            if fingerprint is None:
                raise ConfigError(
                    f"{self.describe()} holds no OpenPGP secret key; export it with "
                    "gpg --armor --export-secret-keys <key id> and mount that file.")
            self._run([self._program, "--batch", "--import"], env=env, stdin=key,
                      what="importing")
            self._imported = (digest, fingerprint)
            return fingerprint

    def _wrapper(self) -> Path:
        path = self.home / "gpg-sign"
        text = _GPG_WRAPPER % {"var": PASSPHRASE_VAR, "gpg": shlex.quote(self._program)}
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            _write_private(path, text, mode=0o700)
        return path

    @contextmanager
    def _agent(self) -> Iterator[None]:
        """Count a session that may start gpg-agent; stop the agent after the last one, so
        no process outlives the commits (scheduler threads may sign at the same time)."""
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self._stop_agent()

    def _stop_agent(self) -> None:
        gpgconf = shutil.which("gpgconf")
        if gpgconf and self.gnupg_home.is_dir():
            subprocess.run([gpgconf, "--kill", "gpg-agent"], env=_child_env(
                {"GNUPGHOME": str(self.gnupg_home)}), capture_output=True, timeout=_TIMEOUT,
                check=False)

    # ---- helpers ---------------------------------------------------------------------------

    def _private(self, path: Path) -> None:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.chmod(0o700)  # gpg refuses a home other users can read
        except OSError as exc:
            raise ConfigError(f"The signing directory {path} cannot be created "
                              f"({type(exc).__name__}); check the cache directory's "
                              "permissions.") from None

    def _run(self, argv: list[str], *, env: Mapping[str, str], what: str,
             stdin: str = "image-updater signing probe\n", hint: str = "") -> str:
        try:
            done = subprocess.run(argv, input=stdin, env=_child_env(env), capture_output=True,
                                  text=True, timeout=_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"Running {argv[0]} for {what} {self.describe()} failed "
                              f"({type(exc).__name__}).") from None
        if done.returncode != 0:
            said = truncate(self.secrets.mask(done.stderr.strip()))
            raise ConfigError(
                f"{what[0].upper()}{what[1:]} {self.describe()} failed: {said}; "
                f"{hint or _fix(self.format, said, self.setting)}.")
        return done.stdout


def _fix(format: str, said: str, setting: str) -> str:
    if "passphrase" in said.lower() or "batchmode" in said:  # batch: a passphrase was needed
        return (f"check that {setting}.passphrase_file holds the passphrase of this key "
                "(and is set if the key has one)")
    if format == "ssh":
        return "it must be an SSH private key without a passphrase"
    return (f"{setting}.key_file must hold an ASCII-armored OpenPGP secret key "
            "(gpg --armor --export-secret-keys)")


def _secret_key_fingerprint(listing: str) -> str | None:
    """The fingerprint of the first secret (primary) key in ``gpg --with-colons`` output."""
    in_secret = False
    for line in listing.splitlines():
        kind, *rest = line.split(":")
        if kind in ("sec", "pub"):
            in_secret = kind == "sec"
        elif kind == "fpr" and in_secret and len(rest) > 8 and rest[8]:
            return rest[8]
    return None


def _write_private(path: Path, text: str, *, mode: int = 0o600) -> None:
    # created with its final mode: the secret is never readable by others, not even briefly
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    path.chmod(mode)


def _child_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GNUPGHOME", PASSPHRASE_VAR)}
    env.update(extra)
    return env


def _find(program: str, setting: str) -> str:
    found = shutil.which(program)
    if found is None:
        package = "openssh-client" if program == "ssh-keygen" else "gnupg"
        raise ConfigError(f"{setting} needs {program}, which is not installed; install the "
                          f"{package} package (scripts/setup.sh does on Debian).")
    return found


def _refuse_public_key(key: str, fmt: str, setting: str, path: str) -> None:
    """A public key is the most common mistake (``id_ed25519.pub``, ``gpg --export``): say
    so, instead of the signer's error about a temporary copy."""
    head = key.lstrip()[:80]
    public = head.startswith(("ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-")) or \
        "PUBLIC KEY" in head
    if public:
        raise ConfigError(
            f"{path} ({setting}) holds a public key; signing needs the private key "
            + ("(e.g. id_ed25519, not id_ed25519.pub)." if fmt == "ssh" else
               "(gpg --armor --export-secret-keys KEYID).")
            + " Mount the private key there.")
