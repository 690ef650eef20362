"""Docker references as signed claims name them, compared by repository.

containers/image signs the full destination reference (``host/repo:tag``); cosign signs the
repository (``host/repo``). A claim names the expected repository when both reduce to the same
``host/path``: tag and digest dropped, Docker Hub spelled one way. Nothing else is
normalised: another port or another spelling of the host is another name, as cosign and
containers/image compare them. A claim that is not a valid reference (surrounding spaces, a
NUL, an empty tag, an uppercase path, a URL) names no repository, even when one of our keys
signed it.

The grammar is distribution's, as in :mod:`image_updater.registry.reference`; it is repeated
here because verification is pure and may not import the registry adapter.
"""

from __future__ import annotations

import re

_HUB = "docker.io"
_HUB_ALIASES = frozenset({_HUB, "index.docker.io", "registry-1.docker.io"})
_DOMAIN = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN}(?:\.{_DOMAIN})*|\[[a-fA-F0-9:]+\])(?::[0-9]{{1,5}})?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"(?:(?P<host>{_HOST})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?", re.ASCII)
_NAME_MAX_LENGTH = 255


def repository_of(reference: str) -> str | None:
    """``reference`` without its tag or digest, with Docker Hub's implicit parts spelled
    out; None when ``reference`` is not a valid docker reference."""
    match = _REFERENCE.fullmatch(reference) if isinstance(reference, str) else None
    if match is None:
        return None
    host, path = match["host"], match["path"]
    if host is not None and not _looks_like_host(host):
        host, path = None, f"{host}/{path}"  # "team/app": a Docker Hub name, not a host
    host = _HUB if host is None or host in _HUB_ALIASES else host
    if host == _HUB and "/" not in path:
        path = f"library/{path}"
    if len(host) + 1 + len(path) > _NAME_MAX_LENGTH:
        return None
    return f"{host}/{path}"


def same_repository(claimed: str, expected: str) -> bool:
    repository = repository_of(claimed)
    return repository is not None and repository == repository_of(expected)


def _looks_like_host(component: str) -> bool:
    # docker's rule: the first component is a host if it has a '.' or ':', is localhost, or
    # has an uppercase letter (which a repository path never may)
    return ("." in component or ":" in component or component == "localhost"
            or component != component.lower())
