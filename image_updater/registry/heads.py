"""Bulk manifest HEADs on worker threads: the hot path of a poll, one HEAD per tracked tag.

A steady poll asks each tracked tag's digest and almost always hears "unchanged". Through
httpx's async stack one such HEAD costs ~2-3 ms of CPU here; through the sync client on
a pool of threads ~0.6 ms (bench/README.md). So :meth:`OciRegistry.digests` sends its
HEADs with :func:`head_tags` on the transport's pool, and only the plain answers are taken
here: a digest (checked, from the registry's own origin) or a 404. Anything else is
handed back to the async path, which owns retries and error messages:

- a retryable failure (5xx, 429, a connection error) comes back as the ``RetryLater`` of
  the first attempt, and the async path carries on with the remaining attempts;
- an answer without a digest header is asked again with a GET, as ``head_manifest`` does;
- any other status (401, 403, 400 …) is asked again by ``head_manifest``, whose error
  message needs the response: one more request, on an error path only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from image_updater.registry.transport import RegistryTransport
from image_updater.retry import RetryLater

#: tags looked up one after another by one worker; more tags are split over workers
TAGS_PER_JOB = 4


@dataclass(frozen=True)
class AskAgain:
    """The async path must answer this tag: ``get`` when the HEAD carried no digest."""

    get: bool = False


#: a tag's outcome: its digest, None (no such tag), a first attempt to carry on from,
#: a tag to ask again, or the error that concerns this tag only
Outcome = str | None | RetryLater | AskAgain | Exception


def jobs(tags: Sequence[str]) -> list[list[str]]:
    return [list(tags[i:i + TAGS_PER_JOB]) for i in range(0, len(tags), TAGS_PER_JOB)]


def head_tags(transport: RegistryTransport, urls: dict[str, str], accept: str,
              checked_digest: Callable[[str, str], str]) -> dict[str, Outcome]:
    """HEAD each ``{tag: url}`` in turn (in a worker thread); see the module docstring.

    ``checked_digest(header, url)`` validates a ``Docker-Content-Digest`` or raises the
    error that names it.
    """
    outcomes: dict[str, Outcome] = {}
    for tag, url in urls.items():
        try:
            outcomes[tag] = _head_one(transport, url, accept, checked_digest)
        except RetryLater as later:
            outcomes[tag] = later
        except Exception as exc:  # charged to this tag, as the async path's gather does
            outcomes[tag] = exc
    return outcomes


def _head_one(transport: RegistryTransport, url: str, accept: str,
              checked_digest: Callable[[str, str], str]) -> Outcome:
    response = transport.send_blocking(transport.build("HEAD", url, {"Accept": accept}))
    transport.from_origin(response, "manifest digest")
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        return AskAgain()
    digest = response.headers.get("Docker-Content-Digest")
    if not digest:
        return AskAgain(get=True)
    return checked_digest(digest, url)
