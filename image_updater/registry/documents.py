"""Registry JSON is untrusted: read tag lists, manifests and indexes through checked shapes.

Pure functions: bytes in, checked values out, or a :class:`RegistryError` naming the
registry and URL. A document of the wrong shape is refused as a whole (``{"tags": "dev"}``
once became the tags ``d``, ``e`` and ``v``); a well-shaped tag list may still carry single
tags that break the tag grammar, and those are dropped with a warning so one odd tag does
not hide all the others.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from image_updater.errors import InvalidReferenceError, RegistryError, truncate
from image_updater.registry.base import (
    DOCKER_MANIFEST_V2,
    INDEX_MEDIA_TYPES,
    MANIFEST_ACCEPT,
    OCI_MANIFEST,
    check_digest,
    check_tag,
)

log = logging.getLogger(__name__)

_IMAGE_MEDIA_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST_V2})


@dataclass(frozen=True, slots=True)
class Where:
    """Who sent a document, from which URL, about which image: every refusal names them."""

    registry: str
    url: str
    image: str = ""  # host/repository, when the document concerns one

    def refuse(self, kind: str, why: str, body: bytes | None = None) -> RegistryError:
        quoted = f" It began: {truncate(body, 120)!r}." if body is not None else ""
        return RegistryError(
            f"Registry {self.registry} answered {self.url}{self._about()} with a malformed "
            f"{kind}: {why}; "
            f"it is not used.{quoted} Check that the registry speaks the OCI distribution "
            "API.", registry=self.registry, url=self.url)

    def _about(self) -> str:
        return f" (image {self.image})" if self.image else ""


def json_object(body: bytes) -> dict[str, Any] | None:
    """``body`` as a JSON object, or None when it is not one."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def tag_list(body: bytes, where: Where, repository: str) -> list[str]:
    """The ``tags`` of one tag-list page.

    The spec shows ``tags`` as a list of strings; the CNCF registry sends ``null`` (or
    leaves it out) for a repository whose tags were all deleted, which means no tags.
    """
    data = json_object(body)
    if data is None:
        raise where.refuse("tag list", "it is not a JSON object", body)
    tags = data.get("tags")
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise where.refuse("tag list", f"'tags' is not a list of strings "
                                       f"({truncate(repr(tags), 80)})")
    return [tag for tag in tags if _valid_tag(tag, repository, where)]


def _valid_tag(tag: str, repository: str, where: Where) -> bool:
    try:
        check_tag(tag)
    except InvalidReferenceError:
        log.warning("ignoring invalid tag %s in %s/%s (from %s)", repr(tag)[:90],
                    where.registry, repository, where.url)
        return False
    return True


def manifest_media_type(content_type: str, body: bytes, where: Where) -> str:
    """The media type of a manifest body, after checking the body's shape.

    The ``Content-Type`` wins when it is a manifest type (some registries answer
    ``application/json``; the body names its own type then). A body that contradicts a
    manifest ``Content-Type`` is refused: an index read as an image, or the reverse, would
    be promoted wrongly.
    """
    data = json_object(body)
    if data is None:
        raise where.refuse(_kind(content_type), "it is not a JSON object", body)
    declared = data.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise where.refuse(_kind(content_type), f"'mediaType' is not a string "
                                                f"({truncate(repr(declared), 80)})")
    if content_type in MANIFEST_ACCEPT and declared in MANIFEST_ACCEPT and \
            declared != content_type:
        raise where.refuse(_kind(content_type), f"it is served as {content_type} but "
                                                f"declares itself {declared}")
    media_type = content_type if content_type in MANIFEST_ACCEPT else (declared or content_type)
    if media_type in INDEX_MEDIA_TYPES:
        _check_index(data, where)
    elif media_type in _IMAGE_MEDIA_TYPES:
        _check_image(data, where)
    return media_type


def _kind(media_type: str) -> str:
    if media_type in INDEX_MEDIA_TYPES:
        return "index"
    return "image manifest" if media_type in _IMAGE_MEDIA_TYPES else "manifest"


def _check_index(data: dict[str, Any], where: Where) -> None:
    entries = data.get("manifests")
    if not isinstance(entries, list):
        raise where.refuse("index", "'manifests' is not a list")
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise where.refuse("index", f"manifests[{number}] is not an object")
        _check_descriptor(entry, f"manifests[{number}]", "index", where)
        platform = entry.get("platform")
        if platform is None:
            continue
        if not isinstance(platform, dict) or not all(
                isinstance(platform.get(k, ""), str) for k in ("os", "architecture", "variant")):
            raise where.refuse("index", f"manifests[{number}].platform is not an object "
                                              "of strings os, architecture and variant")


def _check_image(data: dict[str, Any], where: Where) -> None:
    config = data.get("config")
    if not isinstance(config, dict):
        raise where.refuse("image manifest", "'config' is not an object")
    _check_descriptor(config, "config", "image manifest", where)
    layers = data.get("layers", [])
    if not isinstance(layers, list):
        raise where.refuse("image manifest", "'layers' is not a list")
    for number, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise where.refuse("image manifest", f"layers[{number}] is not an object")
        _check_descriptor(layer, f"layers[{number}]", "image manifest", where)


def _check_descriptor(descriptor: dict[str, Any], field: str, kind: str, where: Where) -> None:
    try:
        check_digest(descriptor.get("digest"), what=f"{field}.digest")  # type: ignore[arg-type]
    except InvalidReferenceError as exc:
        raise where.refuse(kind, str(exc).rstrip(".")) from exc
    media_type = descriptor.get("mediaType")
    if media_type is not None and not isinstance(media_type, str):
        raise where.refuse(kind, f"{field}.mediaType is not a string")
    size = descriptor.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise where.refuse(kind, f"{field}.size is not a non-negative integer")
