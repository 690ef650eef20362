"""Build the adapter that ``ForgeOptions.kind`` names."""

from __future__ import annotations

import time

import httpx

from image_updater.clocks import WallClock
from image_updater.forge.base import Forge, ForgeOptions
from image_updater.forge.gitea import GiteaForge
from image_updater.forge.github import GitHubForge
from image_updater.forge.gitlab import GitLabForge
from image_updater.forge.http import Sleep
from image_updater.secrets import SecretRegistry


def open_forge(
    options: ForgeOptions,
    *,
    secrets: SecretRegistry,
    sleep: Sleep = time.sleep,
    clock: WallClock = time.time,
    transport: httpx.BaseTransport | None = None,
) -> Forge:
    """A forge client for ``options``; call ``disconnect()`` on it when done.

    ``sleep`` is used for rate-limit and retry waits, ``clock`` (epoch seconds) to read
    reset headers and token expiry; tests pass their own. Every token read or minted is
    added to ``secrets``, the registry log lines are masked with. No request is sent here.
    """
    if options.kind == "github":
        return GitHubForge(options, sleep=sleep, clock=clock, secrets=secrets,
                           transport=transport)
    if options.kind == "gitlab":
        return GitLabForge(options, sleep=sleep, clock=clock, secrets=secrets,
                           transport=transport)
    return GiteaForge(options, sleep=sleep, clock=clock, secrets=secrets,
                      transport=transport)
