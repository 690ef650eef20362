"""Image references (``host/team/app:tag@sha256:…``) parsed and normalised the way docker does.

Normalisation rules (from the distribution ``reference`` grammar):

- The first path component is a registry host only if it contains ``.`` or ``:`` or is
  ``localhost`` (or has an uppercase letter, which a repository never may); otherwise the
  whole name lives on Docker Hub, ``docker.io``.
- ``index.docker.io`` is the legacy name of ``docker.io``; the API itself is served from
  ``registry-1.docker.io`` (see :func:`api_host`).
- A single-component Docker Hub name is an official image: ``nginx`` is ``library/nginx``.
- Repository paths are lowercase; the full name is at most 255 characters; tags follow the
  distribution tag grammar; only ``sha256`` digests are accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import NoReturn

from image_updater.errors import InvalidReferenceError
from image_updater.registry.base import check_digest, check_tag

DOCKER_HUB = "docker.io"
DOCKER_HUB_LEGACY = "index.docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
#: every name under which Docker Hub appears in references and in docker's config.json
DOCKER_HUB_ALIASES = frozenset({DOCKER_HUB, DOCKER_HUB_LEGACY, DOCKER_HUB_API})
NAME_MAX_LENGTH = 255

_EXPECTED = "expected [HOST[:PORT]/]NAME[:TAG][@sha256:HEX], e.g. registry.example.com/team/app:1.2"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST_RE = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]{{1,5}})?"
)
# A path component: lowercase alphanumerics joined by '.', '_', '__' or one or more '-'.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_HEX64_RE = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True)
class ImageRef:
    """A parsed, normalised image reference. Build it with :func:`parse_reference`."""

    registry: str          # normalised host[:port], e.g. "docker.io", "127.0.0.1:5000"
    repository: str        # path inside the registry, e.g. "library/nginx"
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host that serves the registry API for this reference."""
        return api_host(self.registry)

    def with_tag(self, tag: str) -> ImageRef:
        """The same repository at ``tag``. A digest is dropped: it belonged to the old tag."""
        return replace(self, tag=check_tag(tag), digest=None)

    def with_digest(self, digest: str) -> ImageRef:
        """Pin to ``digest``; the tag is kept so ``tag@digest`` still says where it came from."""
        return replace(self, digest=check_digest(digest))

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def api_host(registry: str) -> str:
    """Docker Hub's API is not served from its reference name; every other host is itself."""
    return DOCKER_HUB_API if registry in DOCKER_HUB_ALIASES else registry


def normalize_host(host: str) -> str:
    """``index.docker.io`` and ``registry-1.docker.io`` are both ``docker.io``."""
    return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host


def parse_reference(text: str) -> ImageRef:
    """Parse ``text`` into an :class:`ImageRef`; raise InvalidReferenceError quoting it."""
    if not isinstance(text, str) or not text or text != text.strip():
        _fail(text, "it is empty or has surrounding whitespace")
    remainder, digest = _split_digest(text)
    name, tag = _split_tag(text, remainder)
    registry, repository = _split_registry(text, name)
    return ImageRef(registry=registry, repository=repository, tag=tag, digest=digest)


def check_repository(repository: str) -> str:
    """Return ``repository`` if it is a valid repository path (no host); raise otherwise.

    Repository names reach URLs, so this also keeps '..', '?' and '%' out of paths.
    """
    if not isinstance(repository, str) or not _PATH_RE.fullmatch(repository):
        shown = repr(repository)[:90]
        raise InvalidReferenceError(
            f"repository {shown} is not a valid repository name; expected lowercase "
            "components of [a-z0-9] joined by '.', '_', '__' or '-', separated by '/'."
        )
    if len(repository) > NAME_MAX_LENGTH:
        raise InvalidReferenceError(
            f"repository {repository[:60]!r}… is {len(repository)} characters long; "
            f"names are limited to {NAME_MAX_LENGTH}."
        )
    return repository


def _split_digest(text: str) -> tuple[str, str | None]:
    if "@" not in text:
        return text, None
    remainder, _, digest = text.partition("@")
    if not digest.startswith("sha256:"):
        _fail(text, f"the digest {digest[:80]!r} is not a sha256 digest")
    try:
        check_digest(digest)
    except InvalidReferenceError:
        _fail(text, "the digest after '@' must be 'sha256:' followed by 64 lowercase hex digits")
    return remainder, digest


def _split_tag(text: str, remainder: str) -> tuple[str, str | None]:
    # A ':' after the last '/' starts a tag; one before it belongs to a host:port.
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon <= slash:
        return remainder, None
    tag = remainder[colon + 1 :]
    try:
        check_tag(tag)
    except InvalidReferenceError:
        _fail(text, f"the tag {tag[:80]!r} is invalid; tags are 1-128 characters of "
                    "[A-Za-z0-9_.-] not starting with '.' or '-'")
    return remainder[:colon], tag


def _split_registry(text: str, name: str) -> tuple[str, str]:
    if not name:
        _fail(text, "the repository name is empty")
    first, sep, rest = name.partition("/")
    if sep and _looks_like_host(first):
        if not _HOST_RE.fullmatch(first):
            _fail(text, f"the registry host {first[:80]!r} is not a valid host[:port]")
        registry, repository = normalize_host(first), rest
    else:
        registry, repository = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    _check_path(text, registry, repository)
    return registry, repository


def _looks_like_host(component: str) -> bool:
    # docker's rule: uppercase is allowed in hosts but never in repository paths.
    return (
        "." in component or ":" in component or component == "localhost"
        or component != component.lower()
    )


def _check_path(text: str, registry: str, repository: str) -> None:
    if repository != repository.lower():
        _fail(text, f"the repository {repository[:80]!r} must be lowercase")
    if not _PATH_RE.fullmatch(repository):
        _fail(text, f"the repository {repository[:80]!r} must consist of lowercase components "
                    "of [a-z0-9] joined by '.', '_', '__' or '-', separated by single '/'")
    if registry == DOCKER_HUB and _HEX64_RE.fullmatch(repository.removeprefix("library/")):
        _fail(text, "a 64-character hex string is an image ID, not a repository name")
    if len(registry) + 1 + len(repository) > NAME_MAX_LENGTH:
        _fail(text, f"the name is longer than {NAME_MAX_LENGTH} characters")


def _fail(text: object, why: str) -> NoReturn:
    shown = repr(text)[:120]
    raise InvalidReferenceError(f"image reference {shown} is invalid: {why}; {_EXPECTED}.")
