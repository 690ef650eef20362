"""Exit codes of every command, and the one mapping from the error tree to them.

Stable: scripts and Argo CD hooks rely on them. The README's "Exit codes:" paragraph is
:func:`summary` verbatim (a unit test compares them), so the two cannot drift.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from enum import IntEnum

from image_updater.changes import Failure
from image_updater.errors import (
    ConfigError,
    ConflictError,
    DigestMismatchError,
    ForgeAuthError,
    GitAuthError,
    HeldError,
    IdentityError,
    IdentityUnavailableError,
    ImageUpdaterError,
    InternalError,
    InvalidReferenceError,
    NotFoundError,
    RegistryAuthError,
)


class ExitCode(IntEnum):
    """What a command's exit status means; ``meaning`` is the documented text."""

    OK = 0
    CONFIG = 1
    USAGE = 2
    NOT_FOUND = 3
    CONFLICT = 4
    AUTH = 5
    TEMPORARY = 6
    PARTIAL = 7
    INTERNAL = 8
    INTEGRITY = 9
    HELD = 10
    INTERRUPTED = 130

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "ok (updated, nothing to do, already promoted)",
    ExitCode.CONFIG: "configuration or policy error",
    ExitCode.USAGE: "usage",
    ExitCode.NOT_FOUND: "not found (image, tag, digest, repository)",
    ExitCode.CONFLICT: ("conflict (compare-and-swap refused, a concurrent writer won, or git "
                        "disagrees with `--digest`)"),
    ExitCode.AUTH: "authentication or permission refused",
    ExitCode.TEMPORARY: ("temporary failure that persisted after retries (`once`: every "
                         "failure was temporary)"),
    ExitCode.PARTIAL: ("`once`: some app environments failed permanently, the others were "
                       "applied or up to date (when every one failed, the code of the first "
                       "permanent error)"),
    ExitCode.INTERNAL: "internal error (a bug)",
    ExitCode.INTEGRITY: ("integrity: a registry served or stored content that does not hash "
                         "to its digest"),
    ExitCode.HELD: ("held: `promote` refused because the target environment is held or "
                    "rolled back (`image-updater release APP ENV` ends it; `--force` promotes "
                    "anyway)"),
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


# Most specific first: the first class an error is an instance of decides. Errors outside
# this table exit TEMPORARY when a retry may help (``temporary``) and CONFIG otherwise.
_BY_ERROR: tuple[tuple[type[ImageUpdaterError], ExitCode], ...] = (
    (HeldError, ExitCode.HELD),
    (ConflictError, ExitCode.CONFLICT),
    (DigestMismatchError, ExitCode.INTEGRITY),
    (NotFoundError, ExitCode.NOT_FOUND),
    (RegistryAuthError, ExitCode.AUTH),
    (GitAuthError, ExitCode.AUTH),
    (ForgeAuthError, ExitCode.AUTH),
    (IdentityUnavailableError, ExitCode.TEMPORARY),
    (IdentityError, ExitCode.AUTH),
    (InvalidReferenceError, ExitCode.USAGE),
    (InternalError, ExitCode.INTERNAL),
    (ConfigError, ExitCode.CONFIG),
)


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code for an error that ended a command; anything unforeseen is INTERNAL."""
    if not isinstance(exc, ImageUpdaterError):
        return ExitCode.INTERNAL
    return _code_for_class(type(exc))


def _code_for_class(cls: type[ImageUpdaterError]) -> ExitCode:
    for error, code in _BY_ERROR:
        if issubclass(cls, error):
            return code
    return ExitCode.TEMPORARY if cls.temporary else ExitCode.CONFIG


def _error_classes(cls: type[ImageUpdaterError] = ImageUpdaterError
                   ) -> Iterator[type[ImageUpdaterError]]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _error_classes(sub)


def _code_for_failure(failure: Failure) -> ExitCode:
    """A failure keeps its error's ``reason`` label; the error tree maps it back."""
    for cls in _error_classes():
        if cls.reason == failure.reason and cls.temporary == failure.temporary:
            return _code_for_class(cls)
    return ExitCode.TEMPORARY if failure.temporary else ExitCode.CONFIG


def once_exit_code(failures: Sequence[Failure], succeeded: int) -> ExitCode:
    """``once``: OK with no failure; TEMPORARY when every failure may pass on a retry;
    PARTIAL when some failed permanently and ``succeeded`` environments (applied or up to
    date) did not; when nothing succeeded and a failure is permanent, the code of the first
    permanent failure, as if that error had ended the command (1, 3, 5, 8, 9…)."""
    if not failures:
        return ExitCode.OK
    permanent = [f for f in failures if not f.temporary]
    if not permanent:
        return ExitCode.TEMPORARY
    return ExitCode.PARTIAL if succeeded else _code_for_failure(permanent[0])


def summary() -> str:
    """The README's exit-code paragraph (before line wrapping)."""
    return "Exit codes: " + " · ".join(f"`{c.value}` {c.meaning}" for c in ExitCode) + "."


def epilog() -> str:
    """A short list for ``--help``."""
    return "Exit codes: " + ", ".join(f"{c.value} {c.name.lower().replace('_', ' ')}"
                                      for c in ExitCode) + "."
