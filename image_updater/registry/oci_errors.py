"""Turning a registry's non-success answer into the error that says what to do about it.

The registry's OCI ``errors[]`` document is quoted through :func:`errors.truncate`; the
credentials are described (``CredentialSource.describe()``), never shown.
"""

from __future__ import annotations

from typing import NoReturn

import httpx

from image_updater.errors import (
    ImmutableTagError,
    NotFoundError,
    RegistryAuthError,
    RegistryError,
    truncate,
)
from image_updater.registry.documents import json_object
from image_updater.registry.transport import RegistryTransport, shown

MAX_ERROR_BODY_BYTES = 64 * 1024


async def read_error_body(response: httpx.Response) -> bytes:
    """At most ``MAX_ERROR_BODY_BYTES`` of an error answer; what could not be read is lost."""
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= MAX_ERROR_BODY_BYTES:
                break
    except (httpx.HTTPError, httpx.StreamError):
        pass  # the status alone still says what went wrong
    return bytes(body[:MAX_ERROR_BODY_BYTES])


def error_codes(body: bytes) -> set[str]:
    errors = (json_object(body) or {}).get("errors")
    if not isinstance(errors, list):
        return set()
    return {str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code")}


def error_detail(body: bytes) -> str:
    """``CODE: message`` for each OCI error, or the raw body when it is not one."""
    errors = (json_object(body) or {}).get("errors")
    if isinstance(errors, list) and errors:
        parts = [f"{e.get('code', '?')}: {e.get('message', '')}".strip()
                 for e in errors if isinstance(e, dict)]
        if parts:
            return "; ".join(parts)
    return body.decode("utf-8", errors="replace")


async def fail(transport: RegistryTransport, response: httpx.Response, *, repository: str,
               reference: str | None = None, body: bytes | None = None) -> NoReturn:
    """Raise the error for a non-success answer about ``repository`` (and ``reference``)."""
    host = transport.host
    credentials = transport.options.credentials.describe()
    if body is None:
        body = await read_error_body(response)
    status = response.status_code
    url = shown(str(response.request.url))
    detail = truncate(error_detail(body))
    said = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    target = f"repository {repository}" if repository else "the registry API"
    if status in (401, 403):
        verb = "push to" if response.request.method not in ("GET", "HEAD") else "pull from"
        raise RegistryAuthError(
            f"Registry {host} refused access to {target} ({said}) using {credentials}; check "
            f"that these credentials are valid and allowed to {verb} it.",
            registry=host, url=url)
    if status == 404:
        raise NotFoundError(not_found(host, repository, reference, error_codes(body)),
                            registry=host, url=url)
    raise RegistryError(
        f"Registry {host} answered {response.request.method} {url} with {said}.",
        registry=host, url=url)


async def fail_put_manifest(transport: RegistryTransport, response: httpx.Response, *,
                            repository: str, tag: str) -> NoReturn:
    host = transport.host
    body = await read_error_body(response)
    if response.status_code in (400, 403, 409, 412) and b"immutable" in body.lower():
        raise ImmutableTagError(
            f"Registry {host} refuses to move tag {tag} of {repository} because the tag is "
            f"immutable ({truncate(error_detail(body))}); promote to a new tag or make the "
            "tag mutable.", registry=host, url=shown(str(response.request.url)))
    await fail(transport, response, repository=repository, reference=tag, body=body)


def not_found(host: str, repository: str, reference: str | None, codes: set[str]) -> str:
    where = f"{host}/{repository}"
    if "NAME_UNKNOWN" in codes or (reference is None and repository):
        return (f"Repository {repository} does not exist on {host}; check the image name in "
                "the policy, or push the image first.")
    if reference is None:
        return f"Registry {host} does not serve the OCI distribution API at /v2/."
    if "BLOB_UNKNOWN" in codes:
        return f"Blob {reference} not found in {where}; the image is incomplete there."
    if reference.startswith("sha256:"):
        return f"Manifest {reference} not found in {where}; it may have been deleted."
    return f"Tag {reference} not found in {where}; push it or fix the policy's tag."
