"""The exception tree of image-updater.

Every error says whether retrying can help (``temporary``), and its message is a
full sentence naming the image, file, field or URL concerned and what to do next.
Messages never contain secrets, and bodies received from remote servers are
truncated with :func:`truncate` before they are quoted.

    ImageUpdaterError
    ├── ConfigError                  permanent: fix the configuration
    │   └── PolicyError              one or more located policy problems
    ├── InvalidReferenceError        permanent: malformed image reference / tag / digest
    ├── RegistryError                carries ``registry`` (host) and ``url``
    │   ├── RegistryAuthError        permanent until credentials change (401/403)
    │   ├── NotFoundError            permanent: repository, tag or manifest unknown
    │   ├── DigestMismatchError      permanent: body does not hash to the claimed digest
    │   ├── ImmutableTagError        permanent: registry refuses to move an immutable tag
    │   ├── ResponseTooLargeError    permanent: a body over its cap was refused unread
    │   └── TransientRegistryError   temporary: connection, timeout, 5xx, 429 after retries
    ├── ValuesError                  permanent: values file missing / unparseable / key missing
    ├── GitError                     git command failed
    │   ├── GitAuthError             permanent until credentials change
    │   ├── GitUnavailableError      temporary: remote unreachable, timed out, or remote error
    │   └── PushRejectedError        temporary: somebody else pushed first
    ├── ForgeError                   a forge API (GitHub, GitLab, Gitea) failed
    │   ├── ForgeAuthError           permanent: 401/403, missing scope
    │   ├── ForgeRateLimitedError    temporary: carries ``retry_after`` seconds
    │   └── ForgeUnavailableError    temporary: connection failure or 5xx after retries
    ├── NotifyError                  a notification could not be delivered (never fails a cycle)
    ├── ConflictError                permanent: compare-and-swap refused (tag points elsewhere)
    ├── HeldError                    permanent until released: the environment is held
    ├── UnverifiedError              permanent until re-signed: the signature gate refused
    └── IdentityError                a caller of the daemon's API could not be trusted
        ├── UnauthenticatedError     401: no, unknown, expired or unverifiable credentials
        ├── PermissionDeniedError    403: a known identity without a grant for this
        └── IdentityUnavailableError temporary: an issuer's signing keys could not be fetched
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_REMOTE_BODY = 300


def truncate(text: str | bytes | None, limit: int = MAX_REMOTE_BODY) -> str:
    """Shorten a remote body for quoting in a message; never quote more than ``limit`` chars."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


class ImageUpdaterError(Exception):
    """Base class. ``temporary`` tells the caller whether a retry may succeed."""

    temporary: bool = False
    #: a short machine-readable reason, used as the ``reason`` label of error metrics
    reason: str = "error"


class ConfigError(ImageUpdaterError):
    reason = "config"


@dataclass(frozen=True)
class Problem:
    """One located problem in a policy or settings file."""

    file: str
    line: int
    column: int
    field: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        text = f"{where}: {self.field}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


class PolicyError(ConfigError):
    """All problems found while loading policies, reported at once."""

    reason = "policy"

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class InvalidReferenceError(ImageUpdaterError):
    reason = "invalid_reference"


class RegistryError(ImageUpdaterError):
    reason = "registry"

    def __init__(self, message: str, *, registry: str = "", url: str = ""):
        super().__init__(message)
        self.registry = registry
        self.url = url


class RegistryAuthError(RegistryError):
    reason = "registry_auth"


class NotFoundError(RegistryError):
    reason = "not_found"


class DigestMismatchError(RegistryError):
    reason = "digest_mismatch"


class ImmutableTagError(RegistryError):
    reason = "immutable_tag"


class ResponseTooLargeError(RegistryError):
    """A registry sent a body larger than the cap for what it is (Content-Length or bytes);
    its ``reason`` stays ``registry``, as before it had a class of its own."""


class TransientRegistryError(RegistryError):
    temporary = True
    reason = "registry_unavailable"


class ValuesError(ImageUpdaterError):
    reason = "values"


class GitError(ImageUpdaterError):
    reason = "git"


class GitAuthError(GitError):
    reason = "git_auth"


class GitUnavailableError(GitError):
    temporary = True
    reason = "git_unavailable"


class PushRejectedError(GitError):
    temporary = True
    reason = "push_rejected"


class ForgeError(ImageUpdaterError):
    reason = "forge"


class ForgeAuthError(ForgeError):
    reason = "forge_auth"


class ForgeRateLimitedError(ForgeError):
    temporary = True
    reason = "forge_rate_limited"

    def __init__(self, message: str, *, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class ForgeUnavailableError(ForgeError):
    temporary = True
    reason = "forge_unavailable"


class NotifyError(ImageUpdaterError):
    """A notification sink refused an event or stayed unreachable; names the sink, never its
    URL (a webhook URL is a secret)."""

    reason = "notify"


class ConflictError(ImageUpdaterError):
    reason = "conflict"


class HeldError(ImageUpdaterError):
    """A person held the environment (``image-updater hold`` or ``rollback``); ``promote``
    into it refuses unless forced."""

    reason = "held"


class UnverifiedError(ImageUpdaterError):
    """An environment requires cosign signatures (policy ``verify``) and the digest has no
    valid one; ``verdict`` says why (unsigned, wrong-key, wrong-digest, wrong-identity,
    tampered, malformed): the ``reason`` label of image_updater_verification_failures_total."""

    reason = "unverified"

    def __init__(self, message: str, *, verdict: str):
        super().__init__(message)
        self.verdict = verdict


class IdentityError(ImageUpdaterError):
    """The daemon's API refused its caller; messages never quote the credential."""

    reason = "identity"


class UnauthenticatedError(IdentityError):
    reason = "unauthenticated"


class PermissionDeniedError(IdentityError):
    reason = "permission_denied"


class IdentityUnavailableError(IdentityError):
    temporary = True
    reason = "identity_unavailable"


class InternalError(ImageUpdaterError):
    """A fault we did not foresee (a bug, or input no check caught), confined to its scope."""

    reason = "internal"


def as_image_updater_error(exc: BaseException, where: str) -> ImageUpdaterError:
    """``exc`` as an :class:`ImageUpdaterError`, so one failure is reported like any other.

    Unforeseen exceptions keep their type name in the message and are logged with their
    traceback by the caller's logger at debug level; they never stop other apps.
    """
    if isinstance(exc, ImageUpdaterError):
        return exc
    # Not shortened: a cut could split a secret the log masking would otherwise recognise.
    error = InternalError(f"unexpected {type(exc).__name__} while handling {where}: "
                          f"{exc}; this is a bug or unforeseen input, please report it. Other "
                          "apps are not affected; will retry next cycle.")
    error.__cause__ = exc
    return error
