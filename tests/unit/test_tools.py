"""A tool missing in CI fails the test that needs it; elsewhere it skips with an install hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.tools import require_tool


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", str(tmp_path))
    return tmp_path


def test_a_missing_tool_fails_in_ci_naming_the_package(
        empty_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Debian package apache2-utils"):
        require_tool("htpasswd")


def test_a_missing_tool_skips_outside_ci(empty_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Debian package prometheus"):
        require_tool("promtool")


def test_an_optional_tool_skips_even_in_ci(empty_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.skip.Exception, match="no Debian package"):
        require_tool("helm")


def test_a_present_tool_is_found(empty_path: Path) -> None:
    tool = empty_path / "promtool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert require_tool("promtool") == str(tool)
