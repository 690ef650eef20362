"""Docker references as signed claims name them, compared by repository.

containers/image signs the full destination reference (``host/repo:tag``); cosign signs the
repository (``host/repo``). A claim names the expected repository when both reduce to the same
``host/path``: tag and digest dropped, Docker Hub spelled one way.
"""

from __future__ import annotations

_HUB_ALIASES = ("index.docker.io", "registry-1.docker.io")


def repository_of(reference: str) -> str:
    """``reference`` without its tag or digest, with Docker Hub's implicit parts spelled out."""
    name = reference.strip().split("@", 1)[0]
    head, sep, last = name.rpartition("/")
    name = head + sep + last.split(":", 1)[0]
    first, slash, rest = name.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        first, rest = "docker.io", name  # no registry host: Docker Hub
    if first in _HUB_ALIASES:
        first = "docker.io"
    if first == "docker.io" and "/" not in rest:
        rest = "library/" + rest
    return f"{first}/{rest}"


def same_repository(claimed: str, expected: str) -> bool:
    return bool(claimed.strip()) and repository_of(claimed) == repository_of(expected)
