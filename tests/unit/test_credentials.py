"""Credential sources: anonymous, env var, rotating secret files, docker config.json."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from image_updater.errors import ConfigError
from image_updater.registry.credentials import (
    Anonymous,
    DockerConfigCredentials,
    EnvCredentials,
    FileCredentials,
    host_of_config_key,
)
from image_updater.secrets import SecretRegistry, read_secret_env, read_secret_file

SECRET = "s3cr3t-Value"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_config(tmp_path: Path, auths: object) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": auths}))
    return path


def docker(*, path: Path, host: str) -> DockerConfigCredentials:
    return DockerConfigCredentials(path=path, host=host, secrets=SecretRegistry())


def files(**kwargs: Any) -> FileCredentials:
    return FileCredentials(secrets=SecretRegistry(), **kwargs)


def env_source(**kwargs: Any) -> EnvCredentials:
    return EnvCredentials(secrets=SecretRegistry(), **kwargs)


def test_anonymous() -> None:
    assert Anonymous().get() is None
    assert "anonymous" in Anonymous().describe()


def test_env_credentials_reads_variable_at_each_use() -> None:
    env = {"REG_PASSWORD": SECRET}
    source = env_source(username="bot", password_env="REG_PASSWORD", environ=env)
    assert source.get() == ("bot", SECRET)
    env["REG_PASSWORD"] = "rotated"
    assert source.get() == ("bot", "rotated")
    assert "REG_PASSWORD" in source.describe() and SECRET not in source.describe()


@pytest.mark.parametrize("env", [{}, {"REG_PASSWORD": ""}])
def test_env_credentials_missing_variable_names_it(env: dict[str, str]) -> None:
    source = env_source(username="bot", password_env="REG_PASSWORD", environ=env)
    with pytest.raises(ConfigError, match=r"environment variable REG_PASSWORD .*(not set|empty)"):
        source.get()


def test_file_credentials_follow_rotation(tmp_path: Path) -> None:
    user, password = tmp_path / "username", tmp_path / "password"
    user.write_text("bot\n")
    password.write_text(SECRET + "\n")  # kubectl-created secrets often end in a newline
    source = files(username_file=user, password_file=password)
    assert source.get() == ("bot", SECRET)
    password.write_text("rotated")
    assert source.get() == ("bot", "rotated")
    assert str(password) in source.describe() and SECRET not in source.describe()


def test_file_credentials_with_fixed_username(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text(SECRET)
    assert files(username="bot", password_file=password).get() == ("bot", SECRET)


def test_file_credentials_need_exactly_one_username(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of 'username' or 'username_file'"):
        files(password_file=tmp_path / "p")
    with pytest.raises(ConfigError, match="exactly one"):
        files(password_file=tmp_path / "p", username="a", username_file=tmp_path / "u")


def test_file_credentials_missing_and_empty_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=f"secret file {missing} .* does not exist"):
        files(username="bot", password_file=missing).get()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=f"secret file {empty} .* is empty"):
        files(username="bot", password_file=empty).get()


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
    assert docker(path=path, host=host).get() == ("bot", SECRET)


def test_docker_config_exact_key_wins_and_other_hosts_do_not_match(tmp_path: Path) -> None:
    path = write_config(tmp_path, {
        "https://reg.io/v1/": {"auth": b64("url:a")},
        "reg.io": {"auth": b64("exact:b")},
        "other.io": {"auth": b64("other:c")},
    })
    assert docker(path=path, host="reg.io").get() == ("exact", "b")
    assert docker(path=path, host="reg.io:5000").get() is None
    assert docker(path=path, host="docker.io").get() is None


def test_docker_config_username_password_and_identity_token(tmp_path: Path) -> None:
    path = write_config(tmp_path, {
        "a.io": {"username": "bot", "password": SECRET},
        "b.io": {"identitytoken": "refresh-token"},
        "c.io": {"username": "00000000-0000-0000-0000-000000000000",
                 "identitytoken": "refresh-token"},
        "d.io": {},
    })
    assert docker(path=path, host="a.io").get() == ("bot", SECRET)
    assert docker(path=path, host="b.io").get() == ("<token>", "refresh-token")
    assert docker(path=path, host="c.io").get() == (
        "00000000-0000-0000-0000-000000000000", "refresh-token")
    assert docker(path=path, host="d.io").get() is None


def test_docker_config_password_may_contain_colons(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"a.io": {"auth": b64("bot:pa:ss:word")}})
    assert docker(path=path, host="a.io").get() == ("bot", "pa:ss:word")


@pytest.mark.parametrize(("auth", "fragment"), [
    ("%%%not-base64", "not valid base64"),
    (b64("no-colon-here"), "no 'username:' part"),
    (4217, "is not a string"),
])
def test_docker_config_bad_auth_names_entry_not_value(tmp_path: Path, auth: object,
                                                      fragment: str) -> None:
    path = write_config(tmp_path, {"a.io": {"auth": auth}})
    with pytest.raises(ConfigError) as info:
        docker(path=path, host="a.io").get()
    message = str(info.value)
    assert fragment in message and "'a.io'" in message and str(path) in message
    # the value itself is never quoted (the temporary path may contain its digits)
    assert str(auth) not in message.replace(str(path), "<path>")


def test_docker_config_invalid_json_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"auths": {"a.io": {"auth": "' + b64(f"bot:{SECRET}") + '"')
    with pytest.raises(ConfigError) as info:
        docker(path=path, host="a.io").get()
    assert "is not valid JSON" in str(info.value) and SECRET not in str(info.value)
    with pytest.raises(ConfigError, match="does not exist"):
        docker(path=tmp_path / "missing.json", host="a.io").get()


def test_docker_config_without_auths_object(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": ["a.io"]}))
    with pytest.raises(ConfigError, match="has no 'auths' object"):
        docker(path=path, host="a.io").get()


def test_docker_config_is_reread(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"a.io": {"auth": b64("bot:one")}})
    source = docker(path=path, host="a.io")
    assert source.get() == ("bot", "one")
    write_config(tmp_path, {"a.io": {"auth": b64("bot:two")}})
    assert source.get() == ("bot", "two")


def test_every_secret_a_source_reads_is_registered_for_masking(tmp_path: Path) -> None:
    secrets = SecretRegistry()
    password = tmp_path / "password"
    password.write_text(SECRET + "\n")
    FileCredentials(username="bot", password_file=password, secrets=secrets).get()
    EnvCredentials(username="bot", password_env="P", environ={"P": "env-password"},
                   secrets=secrets).get()
    auth = b64("bot:docker-password")
    config = write_config(tmp_path, {"a.io": {"auth": auth}})
    DockerConfigCredentials(path=config, host="a.io", secrets=secrets).get()
    shown = secrets.mask(f"{SECRET} env-password docker-password {auth}")
    assert shown == "*** *** *** ***"


# -- the one secret reader (image_updater.secrets) -------------------------------------------

@pytest.mark.parametrize(("content", "value"), [
    ("token", "token"),
    ("token\n", "token"),
    ("token\r\n", "token"),
    ("token\n\n\n", "token"),  # every trailing line ending goes
    ("  token  \n", "  token  "),  # spaces are part of the secret: not stripped
    ("\ttoken", "\ttoken"),
    ("line one\nline two\n", "line one\nline two"),  # inner line breaks are kept
])
def test_one_stripping_rule_for_files_and_variables(tmp_path: Path, content: str,
                                                    value: str) -> None:
    path = tmp_path / "secret"
    path.write_text(content, encoding="utf-8", newline="")
    assert read_secret_file(path, setting="x.file", secrets=SecretRegistry()) == value
    assert read_secret_env("V", setting="x.env", secrets=SecretRegistry(),
                           environ={"V": content}) == value


@pytest.mark.parametrize("content", ["", "\n", "\r\n\n"])
def test_an_empty_secret_is_a_config_error_naming_file_and_setting(tmp_path: Path,
                                                                   content: str) -> None:
    path = tmp_path / "secret"
    path.write_text(content, encoding="utf-8", newline="")
    with pytest.raises(ConfigError) as info:
        read_secret_file(path, setting="git.token_file", secrets=SecretRegistry())
    assert str(path) in str(info.value) and "git.token_file" in str(info.value)
    assert "is empty" in str(info.value)
    with pytest.raises(ConfigError, match=r"environment variable V .*git\.token_env.* is empty"):
        read_secret_env("V", setting="git.token_env", secrets=SecretRegistry(),
                        environ={"V": content})


def test_missing_unreadable_and_unset_sources_say_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist; mount the secret there or fix "
                                          r"webhooks\.secret_file"):
        read_secret_file(tmp_path / "nope", setting="webhooks.secret_file",
                         secrets=SecretRegistry())
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe-" + SECRET.encode())
    with pytest.raises(ConfigError, match=r"cannot be read .*UTF-8") as info:
        read_secret_file(binary, setting="s", secrets=SecretRegistry())
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError, match=r"V .*is not set; set it"):
        read_secret_env("V", setting="s", secrets=SecretRegistry(), environ={})


def test_the_reader_registers_the_value_it_returns(tmp_path: Path) -> None:
    secrets = SecretRegistry()
    path = tmp_path / "secret"
    path.write_text("file-secret\n")
    read_secret_file(path, setting="s", secrets=secrets)
    read_secret_env("V", setting="s", secrets=secrets, environ={"V": "env-secret"})
    assert secrets.mask("file-secret, env-secret") == "***, ***"
