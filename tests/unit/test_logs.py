"""Log formats and secret masking: every secret form, in text and JSON, in tracebacks too."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from image_updater.errors import ConfigError
from image_updater.observability.logs import (
    NOISY_LOGGERS,
    JsonFormatter,
    RedactionFilter,
    SecretRegistry,
    TextFormatter,
    Throttle,
    configure_logging,
    redact,
)

JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJyZWdpc3RyeSIsInN1YiI6ImJvYiJ9"
    ".c2lnbmF0dXJlLWJ5dGVz"
)
REGISTERED = "s3cr3t-Registered-Value"

# (case id, text as a caller would log it, the secret that must not come out)
SECRET_FORMS = [
    ("registered", f"login to registry.example.com with {REGISTERED} failed", REGISTERED),
    ("auth-header-bearer", "sent Authorization: Bearer abc.DEF-ghi_123", "abc.DEF-ghi_123"),
    ("auth-header-basic", "Authorization: Basic Ym9iOmh1bnRlcjI=", "Ym9iOmh1bnRlcjI="),
    ("auth-header-dict", "headers={'Authorization': 'token gho_notrealbutsecret'}",
     "gho_notrealbutsecret"),
    ("proxy-auth", "Proxy-Authorization: Basic cHJveHk6cGFzcw==", "cHJveHk6cGFzcw=="),
    ("query-password", "GET https://r.example/v2/token?password=hunter2x&scope=a", "hunter2x"),
    ("query-token", "GET https://r.example/v2/token?service=r&token=tk-998877", "tk-998877"),
    ("kv-password", "connecting user=bob password=pa55word", "pa55word"),
    ("kv-access-token", "refresh gave access_token: zyx987wvu", "zyx987wvu"),
    ("json-secret", '{"client_secret": "cs-111222333"}', "cs-111222333"),
    ("docker-auth", '{"auths": {"r.example": {"auth": "Ym9iOnB3cHdwdw=="}}}',
     "Ym9iOnB3cHdwdw=="),
    ("private-token-header", "PRIVATE-TOKEN: glpat-abcdefghijklmnopqrst", "glpat-abcdef"),
    ("url-userinfo", "cloning https://bob:hunter2x@git.example.com/org/deploys.git", "hunter2x"),
    ("url-token-user", "push to https://x-access-token:ghs_tokenvalue@github.com/o/r", "ghs_token"),
    ("url-user-only", "fetch https://tokenonlyuser@git.example.com/r.git", "tokenonlyuser"),
    ("jwt", f"registry issued {JWT} for pull", JWT),
    ("github-pat", "using ghp_" + "A" * 36 + " for the API", "ghp_" + "A" * 36),
    ("aws-key-id", "assumed AKIAIOSFODNN7EXAMPLE for ECR", "AKIAIOSFODNN7EXAMPLE"),
]

# Text that looks a bit like a secret but is not one; it must come out unchanged.
BENIGN = [
    "app=application-x env=dev committed sha256:" + "a" * 64 + " (next cycle in 120 s)",
    "pulled registry.example.com/team/app:1.2.3@sha256:" + "b" * 64,
    "tokens=3 token_url=https://auth.example.com/token scheme=Bearer",
    "pushing to git@github.com:org/deploys.git branch master",
    "GET https://r.example/v2/app/manifests/dev returned 401, fetching a token next",
    "secret_name=image-updater-git mounted at /etc/image-updater/git",
]


@pytest.fixture
def capture() -> Iterator[Callable[..., tuple[logging.Logger, io.StringIO]]]:
    """configure_logging on a private logger; handlers and library levels restored after."""
    saved = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    made: list[tuple[logging.Logger, logging.Handler]] = []

    def make(fmt: str, secrets: SecretRegistry | None = None,
             level: str = "DEBUG") -> tuple[logging.Logger, io.StringIO]:
        logger = logging.getLogger(f"image_updater.test.{uuid.uuid4().hex}")
        logger.propagate = False
        stream = io.StringIO()
        registry = secrets if secrets is not None else SecretRegistry()
        made.append((logger, configure_logging(
            fmt=fmt, level=level, stream=stream, secrets=registry, logger=logger)))
        return logger, stream

    yield make
    for logger, handler in made:
        logger.removeHandler(handler)
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def _registry() -> SecretRegistry:
    return SecretRegistry([REGISTERED])


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize(("text", "secret"), [c[1:] for c in SECRET_FORMS],
                         ids=[c[0] for c in SECRET_FORMS])
class TestEverySecretForm:
    def test_in_message(self, capture, fmt: str, text: str, secret: str) -> None:
        log, out = capture(fmt, _registry())
        log.info(text)
        assert secret not in out.getvalue()
        assert "***" in out.getvalue()

    def test_in_arguments(self, capture, fmt: str, text: str, secret: str) -> None:
        log, out = capture(fmt, _registry())
        log.warning("request failed: %s", text)
        assert secret not in out.getvalue()
        assert "request failed: " in out.getvalue()

    def test_in_extra_field(self, capture, fmt: str, text: str, secret: str) -> None:
        log, out = capture(fmt, _registry())
        log.info("cycle done", extra={"registry": text, "app": "application-x"})
        assert secret not in out.getvalue()
        assert "application-x" in out.getvalue()

    def test_in_traceback(self, capture, fmt: str, text: str, secret: str) -> None:
        log, out = capture(fmt, _registry())
        try:
            raise RuntimeError(f"upstream said: {text}")
        except RuntimeError:
            log.exception("reconcile failed; will retry in 30 s")
        assert secret not in out.getvalue()
        assert "RuntimeError: upstream said:" in out.getvalue()


@pytest.mark.parametrize("text", BENIGN)
def test_benign_text_is_left_alone(text: str) -> None:
    assert redact(text, _registry()) == text


def test_chained_exception_and_object_extra_are_masked(capture) -> None:
    class Url:  # an object whose str() holds a credential, like httpx.URL
        def __str__(self) -> str:
            return "https://bob:hunter2x@r.example/v2/"

    log, out = capture("json", _registry())
    try:
        try:
            raise OSError(f"connect failed with {REGISTERED}")
        except OSError as exc:
            raise RuntimeError("registry unreachable: Authorization: Bearer qqq111") from exc
    except RuntimeError:
        log.error("giving up", exc_info=True, extra={"url": Url()})
    doc = json.loads(out.getvalue())
    assert doc["url"] == "https://***@r.example/v2/"
    assert REGISTERED not in doc["exc"] and "qqq111" not in doc["exc"]
    assert "OSError" in doc["exc"]


def test_stack_info_is_masked(capture) -> None:
    log, out = capture("text", _registry())
    log.info("checkpoint %s", REGISTERED, stack_info=True)
    assert "Stack (most recent call last)" in out.getvalue()
    assert REGISTERED not in out.getvalue()


def test_secret_added_after_configuration_is_masked(capture) -> None:
    secrets = SecretRegistry()
    log, out = capture("text", secrets)
    secrets.add("late-loaded-password")
    log.info("using late-loaded-password")
    assert "late-loaded-password" not in out.getvalue()


def test_longer_secret_containing_a_shorter_one_is_masked_whole() -> None:
    secrets = SecretRegistry(["abcd", "xxabcdyy"])
    assert redact("k xxabcdyy k", secrets) == "k *** k"


def test_too_short_values_are_not_registered() -> None:
    secrets = SecretRegistry(["", "  ", "abc"])
    assert len(secrets) == 0
    assert redact("abc flows through", secrets) == "abc flows through"


@given(
    secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=4, max_size=40),
    before=st.text(max_size=40),
    after=st.text(max_size=40),
)
def test_registered_secret_never_survives(secret: str, before: str, after: str) -> None:
    text = before + secret + after
    assert secret not in redact(text, SecretRegistry([secret]))


@given(st.text(max_size=200))
def test_redaction_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "image_updater.reconcile", logging.INFO, __file__, 1,
        "committed %s (next cycle in %d s)", ("sha256:" + "c" * 64, 120), None)
    record.created = 1795860000.25  # 2026-11-28T10:00:00.250Z
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_text_line_shape() -> None:
    record = _record(env="dev", app="application-x")
    line = TextFormatter().format(record)
    assert line == (
        "2026-11-28T10:00:00Z INFO  reconcile: app=application-x env=dev committed sha256:"
        + "c" * 64 + " (next cycle in 120 s)")


def test_text_quotes_values_with_spaces() -> None:
    line = TextFormatter().format(_record(app="application-x", reason="tag moved twice"))
    assert 'reason="tag moved twice"' in line


def test_json_line_shape() -> None:
    record = _record(app="application-x", env="dev", image="r.example/team/app", attempt=2)
    doc = json.loads(JsonFormatter().format(record))
    assert doc == {
        "ts": "2026-11-28T10:00:00.250Z", "level": "INFO", "logger": "image_updater.reconcile",
        "msg": "committed sha256:" + "c" * 64 + " (next cycle in 120 s)",
        "app": "application-x", "env": "dev", "image": "r.example/team/app", "attempt": 2,
    }


def test_filter_keeps_numbers_as_numbers() -> None:
    record = _record(attempt=3, ok=True)
    assert RedactionFilter().filter(record) is True
    assert record.attempt == 3 and record.ok is True  # type: ignore[attr-defined]
    assert record.args is None


def test_unformattable_arguments_do_not_raise(capture) -> None:
    log, out = capture("text")
    log.info("two placeholders %s %s", "only-one")
    assert "unformattable arguments" in out.getvalue()


def test_reconfiguring_replaces_the_handler(capture) -> None:
    log, out = capture("text")
    configure_logging(fmt="json", level="INFO", stream=out, logger=log,
                      secrets=SecretRegistry())
    log.info("once")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["msg"] == "once"


def test_level_applies_and_noisy_libraries_are_quietened(capture) -> None:
    log, out = capture("text", level="WARNING")
    log.info("hidden")
    log.warning("shown")
    assert re.search(r"WARN\w* +test\.\w+: shown", out.getvalue())
    assert "hidden" not in out.getvalue()
    assert logging.getLogger("httpx").level == logging.WARNING


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"fmt": "xml", "level": "INFO"}, "'xml'"),
    ({"fmt": "json", "level": "LOUD"}, "'LOUD'"),
])
def test_bad_settings_raise_config_error_naming_the_value(kwargs: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        configure_logging(stream=io.StringIO(), logger=logging.getLogger("unused"),
                          secrets=SecretRegistry(), **kwargs)


# -- secrets the settings point at, and secrets read later -----------------------------------

def test_known_secrets_cover_docker_config_and_forge_app_keys(tmp_path: Path) -> None:
    import base64

    from image_updater.commands import known_secrets
    from image_updater.config.settings import load_settings

    password, token = f"pw-{uuid.uuid4().hex}", f"id-{uuid.uuid4().hex}"
    auth = base64.b64encode(f"deployer:{password}".encode()).decode()
    docker = tmp_path / "config.json"
    docker.write_text(json.dumps({"auths": {"r.example.com": {"auth": auth},
                                            "q.example.com": {"identitytoken": token}}}))
    key = tmp_path / "app.pem"
    key_body = f"MIIEsecret{uuid.uuid4().hex}"
    key.write_text(f"-----BEGIN RSA PRIVATE KEY-----\n{key_body}\n-----END RSA PRIVATE KEY-----\n")
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(json.dumps({
        "registries": [{"host": "r.example.com",
                        "credentials": {"docker_config": str(docker)}}],
        "forges": [{"url_prefix": "https://github.com/org/", "kind": "github",
                    "api_url": "https://api.github.com",
                    "repository": "org/deploys", "app_id": 1, "app_installation_id": 2,
                    "app_private_key_file": str(key)}]}))
    given = SecretRegistry()
    secrets = known_secrets(load_settings(settings_file, environ={}), given)
    assert secrets is given  # filled in place: the one registry of the process
    line = f"auth={auth} password={password} token={token} key={key_body}"
    masked = secrets.mask(line)
    for value in (auth, password, token, key_body):
        assert value not in masked


def test_a_rotated_webhook_secret_is_masked_once_it_has_been_read(tmp_path: Path) -> None:
    from image_updater.config.settings import WebhookSettings
    from image_updater.daemon.webhooks import WebhookError, verify

    stream = io.StringIO()
    secrets = SecretRegistry(["the-start-up-secret"])
    handler = configure_logging(fmt="text", level="INFO", stream=stream, secrets=secrets)
    try:
        secret_file = tmp_path / "hook-secret"
        rotated = f"rotated-{uuid.uuid4().hex}"
        secret_file.write_text(rotated + "\n")  # the Secret volume was updated
        with pytest.raises(WebhookError):
            verify("registry", {}, b"{}", WebhookSettings(secret_file=str(secret_file)),
                   secrets=secrets)
        logging.getLogger("image_updater.test").warning("request path /webhooks/x/%s", rotated)
    finally:
        logging.getLogger().removeHandler(handler)
    assert rotated not in stream.getvalue()
    assert "/webhooks/x/***" in stream.getvalue()


def test_tokens_read_while_running_are_masked_in_printed_output(tmp_path: Path) -> None:
    """A forge token file read at use time (rotation without restart) is masked from then on,
    in log lines and in what the CLI prints outside logging."""
    from image_updater.forge.tokens import FileToken
    from image_updater.observability.logs import scrub

    stream = io.StringIO()
    secrets = SecretRegistry()
    handler = configure_logging(fmt="text", level="INFO", stream=stream, secrets=secrets)
    try:
        token_file = tmp_path / "forge-token"
        rotated = f"rotated{uuid.uuid4().hex}"
        token_file.write_text(rotated + "\n")
        assert rotated in scrub(f"x {rotated} y", secrets)  # unknown until it has been read
        assert FileToken(str(token_file), secrets).token() == rotated
        printed = scrub(f"FAILED app/prod: forge said {rotated} is revoked", secrets)
        logging.getLogger("image_updater.test").error("token %s refused", rotated)
    finally:
        logging.getLogger().removeHandler(handler)
    assert rotated not in printed and "***" in printed
    assert rotated not in stream.getvalue()


def test_throttle_lets_one_line_through_per_interval_with_the_count() -> None:
    now = [100.0]
    throttle = Throttle(10.0, clock=lambda: now[0])
    assert throttle.due() == 1           # the first event is logged at once
    assert [throttle.due() for _ in range(5)] == [0] * 5
    now[0] += 10.0
    assert throttle.due() == 6           # the five held back, and this one
    now[0] += 3.0
    assert throttle.due() == 0
