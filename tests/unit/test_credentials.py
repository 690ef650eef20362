"""Credential sources: anonymous, env var, rotating secret files, docker config.json."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from image_updater.errors import ConfigError
from image_updater.registry.credentials import (
    Anonymous,
    DockerConfigCredentials,
    EnvCredentials,
    FileCredentials,
    host_of_config_key,
)

SECRET = "s3cr3t-Value"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_config(tmp_path: Path, auths: object) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": auths}))
    return path


def test_anonymous() -> None:
    assert Anonymous().get() is None
    assert "anonymous" in Anonymous().describe()


def test_env_credentials_reads_variable_at_each_use() -> None:
    env = {"REG_PASSWORD": SECRET}
    source = EnvCredentials(username="bot", password_env="REG_PASSWORD", environ=env)
    assert source.get() == ("bot", SECRET)
    env["REG_PASSWORD"] = "rotated"
    assert source.get() == ("bot", "rotated")
    assert "REG_PASSWORD" in source.describe() and SECRET not in source.describe()


@pytest.mark.parametrize("env", [{}, {"REG_PASSWORD": ""}])
def test_env_credentials_missing_variable_names_it(env: dict[str, str]) -> None:
    source = EnvCredentials(username="bot", password_env="REG_PASSWORD", environ=env)
    with pytest.raises(ConfigError, match="environment variable REG_PASSWORD is not set"):
        source.get()


def test_file_credentials_follow_rotation(tmp_path: Path) -> None:
    user, password = tmp_path / "username", tmp_path / "password"
    user.write_text("bot\n")
    password.write_text(SECRET + "\n")  # kubectl-created secrets often end in a newline
    source = FileCredentials(username_file=user, password_file=password)
    assert source.get() == ("bot", SECRET)
    password.write_text("rotated")
    assert source.get() == ("bot", "rotated")
    assert str(password) in source.describe() and SECRET not in source.describe()


def test_file_credentials_with_fixed_username(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text(SECRET)
    assert FileCredentials(username="bot", password_file=password).get() == ("bot", SECRET)


def test_file_credentials_need_exactly_one_username(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of 'username' or 'username_file'"):
        FileCredentials(password_file=tmp_path / "p")
    with pytest.raises(ConfigError, match="exactly one"):
        FileCredentials(password_file=tmp_path / "p", username="a", username_file=tmp_path / "u")


def test_file_credentials_missing_and_empty_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=f"password file {missing} does not exist"):
        FileCredentials(username="bot", password_file=missing).get()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=f"password file {empty} is empty"):
        FileCredentials(username="bot", password_file=empty).get()


@pytest.mark.parametrize(("key", "host"), [
    ("registry.example.com", "registry.example.com"),
    ("https://registry.example.com", "registry.example.com"),
    ("https://registry.example.com/v2/", "registry.example.com"),
    ("http://127.0.0.1:5000", "127.0.0.1:5000"),
    ("https://index.docker.io/v1/", "index.docker.io"),
    ("  HTTPS://Registry.Example.COM/  ", "registry.example.com"),
])
def test_host_of_config_key(key: str, host: str) -> None:
    assert host_of_config_key(key) == host


@pytest.mark.parametrize(("key", "host"), [
    ("registry.example.com:5000", "registry.example.com:5000"),
    ("https://registry.example.com:5000/v2/", "registry.example.com:5000"),
    ("https://index.docker.io/v1/", "docker.io"),
    ("https://index.docker.io/v1/", "registry-1.docker.io"),
    ("docker.io", "index.docker.io"),
])
def test_docker_config_matches_host_and_hub_aliases(tmp_path: Path, key: str, host: str) -> None:
    path = write_config(tmp_path, {key: {"auth": b64(f"bot:{SECRET}")}})
    assert DockerConfigCredentials(path=path, host=host).get() == ("bot", SECRET)


def test_docker_config_exact_key_wins_and_other_hosts_do_not_match(tmp_path: Path) -> None:
    path = write_config(tmp_path, {
        "https://reg.io/v1/": {"auth": b64("url:a")},
        "reg.io": {"auth": b64("exact:b")},
        "other.io": {"auth": b64("other:c")},
    })
    assert DockerConfigCredentials(path=path, host="reg.io").get() == ("exact", "b")
    assert DockerConfigCredentials(path=path, host="reg.io:5000").get() is None
    assert DockerConfigCredentials(path=path, host="docker.io").get() is None


def test_docker_config_username_password_and_identity_token(tmp_path: Path) -> None:
    path = write_config(tmp_path, {
        "a.io": {"username": "bot", "password": SECRET},
        "b.io": {"identitytoken": "refresh-token"},
        "c.io": {"username": "00000000-0000-0000-0000-000000000000",
                 "identitytoken": "refresh-token"},
        "d.io": {},
    })
    assert DockerConfigCredentials(path=path, host="a.io").get() == ("bot", SECRET)
    assert DockerConfigCredentials(path=path, host="b.io").get() == ("<token>", "refresh-token")
    assert DockerConfigCredentials(path=path, host="c.io").get() == (
        "00000000-0000-0000-0000-000000000000", "refresh-token")
    assert DockerConfigCredentials(path=path, host="d.io").get() is None


def test_docker_config_password_may_contain_colons(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"a.io": {"auth": b64("bot:pa:ss:word")}})
    assert DockerConfigCredentials(path=path, host="a.io").get() == ("bot", "pa:ss:word")


@pytest.mark.parametrize(("auth", "fragment"), [
    ("%%%not-base64", "not valid base64"),
    (b64("no-colon-here"), "no 'username:' part"),
    (42, "is not a string"),
])
def test_docker_config_bad_auth_names_entry_not_value(tmp_path: Path, auth: object,
                                                      fragment: str) -> None:
    path = write_config(tmp_path, {"a.io": {"auth": auth}})
    with pytest.raises(ConfigError) as info:
        DockerConfigCredentials(path=path, host="a.io").get()
    message = str(info.value)
    assert fragment in message and "'a.io'" in message and str(path) in message
    assert str(auth) not in message


def test_docker_config_invalid_json_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"auths": {"a.io": {"auth": "' + b64(f"bot:{SECRET}") + '"')
    with pytest.raises(ConfigError) as info:
        DockerConfigCredentials(path=path, host="a.io").get()
    assert "is not valid JSON" in str(info.value) and SECRET not in str(info.value)
    with pytest.raises(ConfigError, match="does not exist"):
        DockerConfigCredentials(path=tmp_path / "missing.json", host="a.io").get()


def test_docker_config_without_auths_object(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": ["a.io"]}))
    with pytest.raises(ConfigError, match="has no 'auths' object"):
        DockerConfigCredentials(path=path, host="a.io").get()


def test_docker_config_is_reread(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"a.io": {"auth": b64("bot:one")}})
    source = DockerConfigCredentials(path=path, host="a.io")
    assert source.get() == ("bot", "one")
    write_config(tmp_path, {"a.io": {"auth": b64("bot:two")}})
    assert source.get() == ("bot", "two")
