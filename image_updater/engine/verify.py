"""Trust what we write: a digest is fetched and hashed again before it reaches git.

The registry answered a HEAD (or a listing) with a digest; before that digest is committed
or proposed, the manifest it names is read and its bytes are hashed (``Registry.verify``).
Each (registry, repository, digest) is verified once per process: a steady tag whose digest
git already holds is never verified, and a pending pull request is not verified every cycle.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from image_updater.changes import Verification, VerificationOutcome
from image_updater.errors import DigestMismatchError, ImageUpdaterError, as_image_updater_error
from image_updater.model import App
from image_updater.registry.base import Registry
from image_updater.registry.reference import parse_reference

DigestKey = tuple[str, str, str]  # (registry host, repository, digest)


class VerifiedDigests:
    """The digests verified so far in this process; shared by the worker threads."""

    def __init__(self) -> None:
        self._seen: set[DigestKey] = set()
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._seen

    def add(self, key: DigestKey) -> None:
        with self._lock:
            self._seen.add(key)


class Verifier:
    """One cycle's verifications, called from the worker threads of the deploy repositories.

    The registry clients belong to the event loop, so each fetch runs there and the worker
    thread waits for it. A digest that failed this cycle is not fetched again by a re-plan
    after a push race: the same error is raised again.
    """

    def __init__(self, registry_for: Callable[[str], Registry], verified: VerifiedDigests,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._registry_for = registry_for
        self._verified = verified
        self._loop = loop
        self._failed: dict[DigestKey, ImageUpdaterError] = {}
        self._lock = threading.Lock()

    def check(self, app: App, digest: str, record: list[Verification]) -> None:
        """Raise when ``digest`` of ``app``'s image must not be written; note what was done."""
        ref = parse_reference(app.image)
        key = (ref.registry, ref.repository, digest)
        with self._lock:
            failed = self._failed.get(key)
        if failed is not None:
            raise failed
        if key in self._verified:
            return
        outcome: VerificationOutcome = "ok"
        try:
            registry = self._registry_for(ref.registry)
            asyncio.run_coroutine_threadsafe(registry.verify(ref.repository, digest),
                                             self._loop).result()
        except Exception as exc:
            outcome = "mismatch" if isinstance(exc, DigestMismatchError) else "failed"
            error = as_image_updater_error(exc, f"verifying {ref.registry}/{ref.repository}@"
                                                f"{digest}")
            with self._lock:
                self._failed[key] = error
            if error is exc:
                raise
            raise error from exc
        finally:
            record.append(Verification(registry=ref.registry, repository=ref.repository,
                                       digest=digest, result=outcome))
        self._verified.add(key)
