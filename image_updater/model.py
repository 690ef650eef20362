"""Policy value objects. Immutable; built only by the loader after validation.

A policy file holds one or more apps (YAML documents separated by ``---``)::

    app: application-x
    image: registry.example.com/team/application-x
    git: {url: https://git.example.com/org/deploys.git, branch: master}
    defaults:                      # shared by every environment, overridable per env
      strategy: digest
      write: {digest: image.digest}
    environments:
      dev:     {file: application-x/values-dev.yaml, tag: dev}
      staging: {file: application-x/values-staging.yaml, tag: staging}
      prod:    {file: application-x/values-prod.yaml, tag: prod, approval: pull-request}
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, get_args

from image_updater.errors import ConfigError
from image_updater.signatures import PublicKey

StrategyKind = Literal["digest", "semver", "alphabetical", "numerical", "newest-build"]
#: The one list of strategy names: the loader, the strategy factory, ``check --strategy``
#: and the documentation tests all read it.
STRATEGIES: tuple[str, ...] = get_args(StrategyKind)
Approval = Literal["none", "pull-request"]
KeyPath = tuple[str | int, ...]  # "image.tag" -> ("image", "tag"); "a.0.b" -> ("a", 0, "b")

#: Default cap on the size of a policy file and of a values file (settings ``limits``).
DEFAULT_FILE_BYTES = 1 << 20

#: cosign signatures, attestations and SBOMs are never images to deploy
DEFAULT_IGNORE: tuple[str, ...] = ("*.sig", "*.att", "*.sbom")


@dataclass(frozen=True)
class TagFilter:
    allow: str | None = None          # regex that must match the whole tag
    ignore: tuple[str, ...] = DEFAULT_IGNORE  # globs, or regexes written as /.../
    extract: str | None = None        # regex with a named group (?P<value>...) to sort on


@dataclass(frozen=True)
class Strategy:
    kind: StrategyKind = "digest"
    tag: str | None = None            # digest: the mutable tag to follow
    constraint: str | None = None     # semver: Masterminds constraint, e.g. "^1.2"
    strict: bool = False              # semver: refuse to coerce "1.2" to "1.2.0"
    order: Literal["asc", "desc"] = "asc"  # alphabetical/numerical: "asc" picks the highest
    filter: TagFilter = field(default_factory=TagFilter)
    platform: str | None = None       # e.g. "linux/amd64": pin that child of an index


@dataclass(frozen=True)
class WriteSpec:
    """Which keys of the values file receive what. At least one is set."""

    tag: KeyPath | None = None        # receives the tag
    digest: KeyPath | None = None     # receives "sha256:..."
    reference: KeyPath | None = None  # receives "tag@sha256:..."


@dataclass(frozen=True)
class PullRequestSpec:
    labels: tuple[str, ...] = ()
    reviewers: tuple[str, ...] = ()
    assignees: tuple[str, ...] = ()
    draft: bool = False
    branch_prefix: str = "image-updater/"


@dataclass(frozen=True)
class CosignVerify:
    """``verify: cosign:`` of an environment: a digest is eligible only when one of ``keys``
    made a valid signature over exactly that digest whose signed claim names
    ``docker_reference`` (None: the app's image)."""

    keys: tuple[PublicKey, ...]
    docker_reference: str | None = None

    def identity(self, image: str) -> str:
        """The repository the signed claims must name, for an app of ``image``."""
        return self.docker_reference or image

    def cache_key(self, image: str) -> tuple[tuple[str, ...], str]:
        """(key fingerprints, identity): with the digest, what a verdict depends on."""
        return tuple(sorted(k.fingerprint for k in self.keys)), self.identity(image)


@dataclass(frozen=True)
class Environment:
    name: str
    file: str                         # path of the values file inside the deploy repository
    strategy: Strategy
    write: WriteSpec
    approval: Approval = "none"
    pull_request: PullRequestSpec = field(default_factory=PullRequestSpec)
    line: int = 0                     # where it was declared, for messages
    #: the signature gate (policy ``verify``); None: no signature is required
    verify: CosignVerify | None = None


@dataclass(frozen=True)
class GitTarget:
    url: str
    branch: str = "master"


@dataclass(frozen=True)
class App:
    name: str
    image: str                        # repository reference without tag, e.g. host/team/app
    git: GitTarget
    environments: tuple[Environment, ...]
    source: str = ""                  # the policy file it came from
    line: int = 0                     # where its document starts, for messages

    def env(self, name: str) -> Environment:
        for e in self.environments:
            if e.name == name:
                return e
        raise KeyError(name)


def check_repo_path(path: str) -> str:
    """A values file path inside the deploy repository, validated.

    The one rule for ``file:``: ``validate`` applies it to policies and git applies it
    before reading or writing, so a path ``validate`` accepts is a path a cycle can use.
    """
    if not isinstance(path, str) or not path or re.search(r"[\x00-\x1f\x7f\\]", path):
        raise ConfigError(
            f"The file path {path!r} is empty or contains control characters or backslashes; "
            "write it relative to the repository root with '/' separators."
        )
    if path.startswith("/"):
        raise ConfigError(
            f"The file path {path!r} is absolute; write it relative to the deploy repository "
            "root, e.g. 'application-x/values-dev.yaml'."
        )
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ConfigError(
            f"The file path {path!r} contains an empty, '.' or '..' component; write a plain "
            "path inside the deploy repository without them."
        )
    if any(p.lower().rstrip(". ") == ".git" for p in parts):
        raise ConfigError(
            f"The file path {path!r} points into git's own '.git' directory; image-updater only "
            "writes files tracked in the deploy repository."
        )
    return path


def known_envs(apps: Iterable[App]) -> frozenset[tuple[str, str]]:
    """Every (app, environment) that ``apps`` name: a hold naming anything else is a typo."""
    return frozenset((a.name, e.name) for a in apps for e in a.environments)


def find_env(app: App, name: str, *, then: str) -> Environment:
    """The environment ``name`` of ``app``, or a ConfigError naming the ones it has; ``then``
    ends the message (what to fix, or "Nothing was written.")."""
    try:
        return app.env(name)
    except KeyError:
        known = ", ".join(e.name for e in app.environments)
        raise ConfigError(f"App {app.name} has no environment {name!r} (it has: {known}) in "
                          f"{app.source or 'its policy'}; {then}") from None
