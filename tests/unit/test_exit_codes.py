"""Exit codes: one mapping from the error tree, the ``once`` rule, and the README's list."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from image_updater import commands
from image_updater.changes import Failure
from image_updater.cli import build_parser, main
from image_updater.errors import (
    ConfigError,
    ConflictError,
    DigestMismatchError,
    ForgeAuthError,
    ForgeRateLimitedError,
    GitAuthError,
    GitUnavailableError,
    ImmutableTagError,
    InternalError,
    InvalidReferenceError,
    NotFoundError,
    PolicyError,
    PushRejectedError,
    RegistryAuthError,
    TransientRegistryError,
    ValuesError,
)
from image_updater.exit_codes import ExitCode, exit_code_for, once_exit_code, summary

README = Path(__file__).parents[2] / "README.md"

ERRORS: list[tuple[BaseException, ExitCode]] = [
    (ConfigError("bad"), ExitCode.CONFIG),
    (PolicyError([]), ExitCode.CONFIG),
    (ValuesError("no key"), ExitCode.CONFIG),
    (ImmutableTagError("immutable"), ExitCode.CONFIG),
    (InvalidReferenceError("bad ref"), ExitCode.USAGE),
    (NotFoundError("gone"), ExitCode.NOT_FOUND),
    (ConflictError("moved"), ExitCode.CONFLICT),
    (RegistryAuthError("401"), ExitCode.AUTH),
    (GitAuthError("denied"), ExitCode.AUTH),
    (ForgeAuthError("403"), ExitCode.AUTH),
    (TransientRegistryError("503"), ExitCode.TEMPORARY),
    (GitUnavailableError("down"), ExitCode.TEMPORARY),
    (PushRejectedError("race"), ExitCode.TEMPORARY),
    (ForgeRateLimitedError("429", retry_after=3), ExitCode.TEMPORARY),
    (InternalError("bug"), ExitCode.INTERNAL),
    (RuntimeError("bug"), ExitCode.INTERNAL),
    (DigestMismatchError("altered"), ExitCode.INTEGRITY),
]


@pytest.mark.parametrize(("error", "code"), ERRORS, ids=lambda v: type(v).__name__)
def test_each_error_maps_to_its_documented_code(error: BaseException, code: ExitCode) -> None:
    assert exit_code_for(error) is code


def test_internal_error_and_digest_mismatch_no_longer_share_a_code() -> None:
    assert len({code.value for code in ExitCode}) == len(ExitCode)
    assert exit_code_for(InternalError("x")) != exit_code_for(DigestMismatchError("x"))


def failure(reason: str, temporary: bool) -> Failure:
    return Failure(app="a", env="e", reason=reason, message="m", temporary=temporary)


TEMP = failure(TransientRegistryError.reason, True)
NOT_FOUND = failure(NotFoundError.reason, False)
AUTH = failure(RegistryAuthError.reason, False)
INTEGRITY = failure(DigestMismatchError.reason, False)

ONCE = [
    # failures, environments applied or up to date, code
    ([], 0, ExitCode.OK),
    ([], 3, ExitCode.OK),
    ([TEMP], 2, ExitCode.TEMPORARY),
    ([TEMP, TEMP], 0, ExitCode.TEMPORARY),
    ([NOT_FOUND], 1, ExitCode.PARTIAL),
    ([TEMP, AUTH], 1, ExitCode.PARTIAL),
    ([NOT_FOUND], 0, ExitCode.NOT_FOUND),
    ([TEMP, AUTH, NOT_FOUND], 0, ExitCode.AUTH),
    ([INTEGRITY], 0, ExitCode.INTEGRITY),
    ([failure("internal", False)], 0, ExitCode.INTERNAL),
    ([failure("a reason no error has", False)], 0, ExitCode.CONFIG),
]


@pytest.mark.parametrize(("failures", "succeeded", "code"), ONCE)
def test_once_exit_code(failures: list[Failure], succeeded: int, code: ExitCode) -> None:
    assert once_exit_code(failures, succeeded) is code


def test_the_readme_lists_exactly_the_enum() -> None:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"^Exit codes: `0`.*?(?=\n\n)", text, re.MULTILINE | re.DOTALL)
    assert found, "README.md has no 'Exit codes: `0` …' paragraph"
    paragraph = " ".join(found.group(0).split())
    assert paragraph == " ".join(summary().split())
    listed = [int(n) for n in re.findall(r"(?:Exit codes: |· )`(\d+)`", paragraph)]
    assert listed == [code.value for code in ExitCode]


def test_help_lists_every_code() -> None:
    text = " ".join(build_parser().format_help().split())
    for code in ExitCode:
        assert f"{code.value} {code.name.lower().replace('_', ' ')}" in text


def test_an_unexpected_exception_exits_internal_with_a_message(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def broken(_args: object) -> int:
        raise KeyError("a bug")

    monkeypatch.setattr(commands, "dispatch", broken)
    assert main(["validate"]) == ExitCode.INTERNAL == 8
    assert "internal error (a bug)" in capsys.readouterr().err


def test_a_digest_mismatch_exits_integrity(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    def altered(_args: object, _secrets: object) -> int:
        raise DigestMismatchError("registry.example.com/app served sha256:1 for sha256:2.")

    monkeypatch.setattr(commands, "dispatch", altered)
    assert main(["validate"]) == ExitCode.INTEGRITY == 9
    assert "served sha256:1" in capsys.readouterr().err

