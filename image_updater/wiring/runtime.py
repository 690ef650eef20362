"""Wiring: turn settings into the registry, git and forge adapters a cycle uses.

Adapters are created on first use and kept for the life of the process, so tokens,
connection pools and working clones are reused across cycles.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from image_updater.clocks import WallClock
from image_updater.config.settings import Settings, message_templates
from image_updater.engine.approval import Approvals
from image_updater.engine.reconcile import Deps
from image_updater.engine.verify import VerifiedDigests
from image_updater.errors import ConfigError
from image_updater.forge.base import Forge
from image_updater.gitops.credentials import GitAuth, redact_url
from image_updater.gitops.repo import DeployRepo
from image_updater.gitops.signing import CommitSigner
from image_updater.model import GitTarget
from image_updater.observability.metrics import Metrics
from image_updater.registry.base import Registry
from image_updater.secrets import SecretRegistry
from image_updater.wiring.registries import open_registry

log = logging.getLogger("image_updater.runtime")


class Runtime:
    """The adapters of one process. ``secrets`` is the registry log lines are masked with:
    every credential source (registries, git, forges, webhooks) adds what it reads to it."""

    def __init__(self, settings: Settings, *, secrets: SecretRegistry,
                 metrics: Metrics | None = None, clock: WallClock = time.time) -> None:
        self.settings = settings
        self.clock = clock  #: epoch seconds, for token expiry; tests pass their own
        self.secrets = secrets
        self.metrics = metrics or Metrics()
        self._registries: dict[str, Registry] = {}
        self._repos: dict[GitTarget, DeployRepo] = {}
        self._forges: dict[str, Forge] = {}
        self._closers: list[Callable[[], None]] = []  # token sources owned by git auth
        self._lock = threading.Lock()  # repos are created from worker threads
        #: kept for the life of the process: a digest is fetched and hashed once
        self.verified = VerifiedDigests()
        #: compiled once (load_settings already checked them against a sample change)
        self.templates = message_templates(settings)
        #: checked now: a key that cannot sign stops the start, not a push at night
        self.signer = commit_signer(settings, secrets)
        check_github_app(settings, secrets)  # the same for the App key git pushes with

    def registry_for(self, host: str) -> Registry:
        if host not in self._registries:
            self._registries[host] = open_registry(self.settings.registry(host),
                                                   secrets=self.secrets, metrics=self.metrics)
        return self._registries[host]

    def repo_for(self, target: GitTarget) -> DeployRepo:
        with self._lock:
            if target not in self._repos:
                git = self.settings.git
                self._repos[target] = DeployRepo(
                    url=target.url, branch=target.branch,
                    cache_dir=Path(self.settings.cache_dir) / "repos",
                    auth=self._git_auth(target), author_name=git.author_name,
                    author_email=git.author_email, lock_timeout=git.lock_timeout,
                    signer=self.signer)
            return self._repos[target]

    def _git_auth(self, target: GitTarget) -> GitAuth:
        app = self.settings.git.github_app
        if app is None:
            return _git_auth(self.settings, self.secrets)
        from image_updater.forge.base import ForgeOptions
        from image_updater.forge.github import open_app_token

        # One token source per deploy repository: its messages name the repository.
        source = open_app_token(ForgeOptions(
            kind="github", api_url=app.api_url, repository=_github_repository(target.url),
            app_id=app.app_id, app_installation_id=app.installation_id,
            app_private_key_file=app.private_key_file),
            secrets=self.secrets, key_setting="git.github_app.private_key_file",
            clock=self.clock)
        self._closers.append(source.close)
        return GitAuth.minted(mint=source.token, source=source.describe(), secrets=self.secrets,
                              username=self.settings.git.username)

    def approvals_for(self, target: GitTarget, repo: DeployRepo) -> Approvals | None:
        fs = self.settings.forge_for(target.url)
        if fs is None:
            return None
        from image_updater.forge.base import ForgeOptions
        from image_updater.forge.factory import open_forge

        with self._lock:
            if fs.url_prefix not in self._forges:
                self._forges[fs.url_prefix] = open_forge(ForgeOptions(
                    kind=fs.kind,  # type: ignore[arg-type]
                    api_url=fs.api_url, repository=fs.repository, token_env=fs.token_env,
                    token_file=fs.token_file, app_id=fs.app_id,
                    app_private_key_file=fs.app_private_key_file,
                    app_installation_id=fs.app_installation_id), secrets=self.secrets)
            forge = self._forges[fs.url_prefix]
        return Approvals(forge=forge, repo=repo, base_branch=target.branch,
                         values_file_bytes=self.settings.limits.values_file_bytes,
                         templates=self.templates)

    def deps(self) -> Deps:
        return Deps(registry_for=self.registry_for, repo_for=self.repo_for,
                    approvals_for=self.approvals_for, verified=self.verified,
                    max_push_attempts=self.settings.git.max_push_attempts,
                    values_file_bytes=self.settings.limits.values_file_bytes,
                    templates=self.templates)

    @property
    def retry_hint(self) -> str:
        """How a daemon's failure log line ends: when the failed work is tried again."""
        return f"in {int(self.settings.interval)} s (next cycle)"

    async def aclose(self) -> None:
        """Close every client, even when closing one fails (it is logged, not raised)."""
        registries, self._registries = list(self._registries.values()), {}
        forges, self._forges = list(self._forges.values()), {}
        closers, self._closers = self._closers, []
        results = await asyncio.gather(*(r.aclose() for r in registries), return_exceptions=True)
        for close in [f.disconnect for f in forges] + closers:
            try:
                close()
            except Exception as exc:  # shutting down: report, and close the rest
                results.append(exc)
        for failed in (r for r in results if isinstance(r, BaseException)):
            log.warning("closing a client failed during shutdown: %s", failed)


def commit_signer(settings: Settings, secrets: SecretRegistry) -> CommitSigner | None:
    """The signer ``git.signing`` asks for, after a probe signature (None: no signing).

    Raises ConfigError when the key is missing, unreadable, not a key, or locked by a
    passphrase that is missing or wrong.
    """
    signing = settings.git.signing
    if signing is None:
        return None
    signer = CommitSigner(
        format=signing.format,  # type: ignore[arg-type]  # checked by load_settings
        key_file=signing.key_file, passphrase_file=signing.passphrase_file,
        home=Path(settings.cache_dir) / "signing", secrets=secrets)
    signer.check()
    log.info("Commits are signed with %s.", signer.describe())
    return signer


def check_github_app(settings: Settings, secrets: SecretRegistry) -> None:
    """With ``git.github_app`` set, its private key must sign an app JWT now (ConfigError
    naming the setting otherwise); nothing is sent to GitHub."""
    app = settings.git.github_app
    if app is None:
        return
    from image_updater.forge.base import ForgeOptions
    from image_updater.forge.github import open_app_token

    source = open_app_token(ForgeOptions(
        kind="github", api_url=app.api_url, repository="check/key",
        app_id=app.app_id, app_installation_id=app.installation_id,
        app_private_key_file=app.private_key_file),
        secrets=secrets, key_setting="git.github_app.private_key_file")
    try:
        source.check_key()
    finally:
        source.close()


def _github_repository(url: str) -> str:
    """``owner/name`` of an HTTPS deploy repository URL, which a GitHub App token needs."""
    parts = urlsplit(url) if "://" in url else None
    path = parts.path.strip("/").removesuffix(".git") if parts else ""
    if parts is None or parts.scheme not in ("https", "http") or path.count("/") != 1:
        raise ConfigError(
            f"git.github_app is set, but the deploy repository {redact_url(url)} is not an "
            "HTTPS URL of the form https://HOST/OWNER/NAME(.git); a GitHub App token is "
            "sent over HTTPS only, so give the repository's HTTPS clone URL.")
    return path


def _git_auth(settings: Settings, secrets: SecretRegistry) -> GitAuth:
    git = settings.git
    if git.ssh_key_file:
        if not git.known_hosts_file:
            from image_updater.errors import ConfigError

            raise ConfigError("git.ssh_key_file is set but git.known_hosts_file is not; host "
                              "keys are always verified, so add a known_hosts file.")
        return GitAuth.ssh(key_file=git.ssh_key_file, known_hosts_file=git.known_hosts_file)
    if git.token_file or git.token_env:
        return GitAuth.token(token_file=git.token_file, token_env=git.token_env,
                             username=git.username, secrets=secrets)
    return GitAuth.none()

