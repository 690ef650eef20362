"""The ``server:`` settings block: the HTTP port's limits, with sane defaults and checks
that name the file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from image_updater.config.server import ServerSettings
from image_updater.config.settings import load_settings
from image_updater.errors import ConfigError


def test_defaults_bound_every_client(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("interval: 60\n")
    server = load_settings(path, environ={}).server
    assert server == ServerSettings()
    assert (server.request_timeout, server.keep_alive, server.max_connections,
            server.max_body_bytes, server.shutdown_grace) == (10.0, 5.0, 100, 1 << 20, 10.0)


def test_values_load(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("server:\n  request_timeout: 2.5\n  keep_alive: 1\n  max_connections: 7\n"
                    "  max_body_bytes: 4096\n  shutdown_grace: 0\n")
    assert load_settings(path, environ={}).server == ServerSettings(
        request_timeout=2.5, keep_alive=1, max_connections=7, max_body_bytes=4096,
        shutdown_grace=0)


def test_impossible_limits_are_refused_naming_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("interval: 60\nserver:\n  request_timeout: 0\n  keep_alive: -1\n"
                    "  max_connections: 0\n  shutdown_grace: -2\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert str(info.value).splitlines() == [
        f"4 problem(s) in settings file {path}:",
        f"  {path}:3:3: server.request_timeout: must be more than 0, not 0",
        f"  {path}:4:3: server.keep_alive: must be more than 0, not -1",
        f"  {path}:5:3: server.max_connections: must be at least 1, not 0",
        f"  {path}:6:3: server.shutdown_grace: must be at least 0, not -2",
    ]


@pytest.mark.parametrize(("text", "why"), [
    ("server: {request_timeout: soon}", "server.request_timeout: must be a number"),
    ("server: {max_connections: 2.5}", "server.max_connections: must be a whole number"),
    ("server: {max_conections: 2}", "did you mean 'max_connections'"),
    ("server: {max_body_bytes: 0}", "server.max_body_bytes: must be at least 1"),
])
def test_wrong_types_and_names_are_reported_like_every_block(tmp_path: Path, text: str,
                                                             why: str) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=why):
        load_settings(path, environ={})
