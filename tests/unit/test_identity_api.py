"""The promotion API's pure parts: request validation, evidence trailers, the client's
mapping of answers back to exit codes."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from starlette.requests import Request

from image_updater.api_client import Promotion, promote_remote
from image_updater.changes import Change, KeyChange
from image_updater.config.api import load_api
from image_updater.daemon.http_limits import BodyTooLarge
from image_updater.daemon.promotions import (
    EvidenceStore,
    PromotionService,
    UsageError,
    handle,
    parse_request,
)
from image_updater.errors import InvalidReferenceError
from image_updater.exit_codes import ExitCode
from image_updater.gitops.message import commit_message, parse_trailers, trailer_block
from image_updater.identity import Authenticator
from image_updater.secrets import SecretRegistry

DIGEST = "sha256:" + "a" * 64
OLD = "sha256:" + "b" * 64


def _body(**fields: Any) -> bytes:
    return json.dumps({"app": "shop", "from": "staging", "to": "prod", "digest": DIGEST,
                       **fields}).encode()


def test_a_valid_request_is_parsed() -> None:
    req = parse_request(_body(evidence={"job": "shop-promote-1"}))
    assert (req.app, req.source, req.target, req.digest) == ("shop", "staging", "prod", DIGEST)
    assert req.evidence == {"job": "shop-promote-1"}


@pytest.mark.parametrize(("body", "says"), [
    (b"[1]", "JSON object"),
    (b'{"app": "shop"', "not JSON"),
    (_body(app="../etc"), "app must be"),
    (_body(to=7), "to must be"),
    (_body(digest=None), "digest is required"),
    (_body(digest="sha256:xyz"), "digest"),
    (_body(force=True), "Unknown field"),
    (_body(evidence=["job"]), "evidence must be an object"),
    (_body(evidence={str(i): "x" for i in range(17)}), "at most 16"),
    (_body(evidence={"Image-Updater-App: x\n": "y"}), "Evidence key"),
    (_body(evidence={"job": 1}), "must be a string"),
    (_body(evidence={"job": "a\nImage-Updater-App: forged"}), "one line"),
    (_body(evidence={"job": "x" * 257}), "at most 256"),
    # JSON may escape an unpaired surrogate; no commit message can carry one (not UTF-8)
    (_body(evidence={"job": "a\ud800"}), "unpaired surrogates"),
    (_body(evidence={"job": "a\udcff"}), "unpaired surrogates"),
    (_body(evidence={"job": "a\x85Image-Updater-App: forged"}), "one line"),
])
def test_untrusted_bodies_are_refused_naming_the_field(body: bytes, says: str) -> None:
    with pytest.raises(InvalidReferenceError, match=says) as info:
        parse_request(body)
    assert isinstance(info.value, UsageError) or "digest" in says


def _change(app: str, env: str) -> Change:
    return Change(app=app, env=env, file=f"{app}/values-{env}.yaml",
                  image="registry.example.com/shop", tag=env, digest=DIGEST,
                  keys=(KeyChange(key="image.digest", old=OLD, new=DIGEST),), why="tag moved")


def test_evidence_ends_its_own_changes_trailer_group() -> None:
    changes = [_change("shop", "prod"), _change("blog", "prod")]
    message = commit_message(changes, source="webhook", evidence=[
        {"job": "shop-promote-1", "promoted-by": "system:serviceaccount:shop:promoter"}, {}])

    block = message.rstrip("\n").rpartition("\n\n")[2].splitlines()
    assert block.index("Image-Updater-Evidence: job=shop-promote-1") < \
        block.index("Image-Updater-App: blog")
    assert "Image-Updater-Evidence: promoted-by=system:serviceaccount:shop:promoter" in block
    groups = parse_trailers(message)
    assert [g["app"] for g in groups] == ["shop", "blog"]  # groups intact
    # the promoted change says so, whatever started the cycle; the other keeps the cycle's
    assert [g["source"] for g in groups] == ["promotion", "webhook"]
    # a pull request's body ends with the same block as its commit
    assert message.rstrip("\n").endswith(trailer_block(changes, source="webhook", evidence=[
        {"job": "shop-promote-1", "promoted-by": "system:serviceaccount:shop:promoter"}, {}]))


def test_evidence_that_slipped_past_the_api_cannot_forge_a_trailer() -> None:
    message = commit_message([_change("shop", "prod")], evidence=[
        {"job": "a\nImage-Updater-App: forged", "bad key\n": "x", "ok": "fine"}])
    assert "forged" not in message and "bad key" not in message
    assert "Image-Updater-Evidence: ok=fine" in message


def test_evidence_that_slipped_past_the_api_still_makes_a_committable_message() -> None:
    message = commit_message([_change("shop", "prod")], evidence=[
        {"job": "a\ud800b", "run": "x\udcffy", "ok": "fine"}])
    message.encode("utf-8")  # git commit -m would fail on a surrogate, every cycle
    assert "job=" not in message and "run=" not in message
    assert "Image-Updater-Evidence: ok=fine" in message


def test_no_evidence_leaves_the_message_alone() -> None:
    message = commit_message([_change("shop", "prod")])
    assert commit_message([_change("shop", "prod")], evidence=[{}]) == message


def test_the_evidence_store_is_bounded_and_expires() -> None:
    now = [0.0]
    store = EvidenceStore(limit=2, ttl=60, clock=lambda: now[0])
    store.put("shop", "prod", DIGEST, {"job": "1"})
    assert store.for_change(_change("shop", "prod")) == {"job": "1"}
    assert store.for_change(_change("shop", "staging")) == {}
    store.put("a", "prod", DIGEST, {})
    store.put("b", "prod", DIGEST, {})
    assert store.for_change(_change("shop", "prod")) == {}  # the oldest went first
    now[0] = 61
    store.put("shop", "prod", DIGEST, {"job": "2"})
    now[0] = 122
    assert store.for_change(_change("shop", "prod")) == {}


# -- the client ------------------------------------------------------------------------------


def _client(tmp_path: Any, handler: Any, attempts: int = 3) -> tuple[ExitCode, str, list[float]]:
    token = tmp_path / "token"
    token.write_text("a-token-0123456789abcdef\n", encoding="utf-8")
    slept: list[float] = []
    answer = promote_remote(
        Promotion(server="http://daemon:8080/", app="shop", source="staging", target="prod",
                  digest=DIGEST, evidence={"job": "j"}),
        token_file=str(token), secrets=SecretRegistry(), attempts=attempts,
        transport=httpx.MockTransport(handler), sleep=slept.append)
    return answer.code, answer.message, slept


@pytest.mark.parametrize(("status", "body", "code"), [
    (200, {"status": "promoted", "message": "promoted x", "code": 0}, ExitCode.OK),
    (409, {"error": "conflict", "code": 4, "message": "The job tested"}, ExitCode.CONFLICT),
    (423, {"error": "held", "code": 10, "message": "held"}, ExitCode.HELD),
    (422, {"error": "unverified", "code": 11, "message": "unsigned"}, ExitCode.UNVERIFIED),
    (422, {"message": "a proxy dropped the code"}, ExitCode.UNVERIFIED),
    (403, {"error": "permission_denied", "code": 5, "message": "no"}, ExitCode.AUTH),
    (404, {"message": "no code in the body"}, ExitCode.NOT_FOUND),
    (400, {"code": 99, "message": "an unknown code"}, ExitCode.USAGE),
])
def test_answers_map_back_to_promotes_exit_codes(tmp_path: Any, status: int,
                                                 body: dict[str, Any], code: ExitCode) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    got, message, slept = _client(tmp_path, handler)
    assert got is code and message == body["message"]
    assert slept == []  # an answer is final
    assert str(seen[0].url) == "http://daemon:8080/api/v1/promotions"
    assert seen[0].headers["authorization"] == "Bearer a-token-0123456789abcdef"
    assert json.loads(seen[0].content)["evidence"] == {"job": "j"}


def test_a_refused_token_names_the_file_it_was_read_from_never_the_token(
        tmp_path: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "unauthenticated", "code": 5,
                                         "message": "The bearer token is not one of the API's "
                                                    "tokens; check the token file."})

    code, message, _ = _client(tmp_path, handler)
    assert code is ExitCode.AUTH
    assert message.endswith(f"(the token was read from {tmp_path / 'token'})")
    assert "a-token-0123456789abcdef" not in message


def test_an_unavailable_daemon_is_retried_then_temporary(tmp_path: Any) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(503, json={"code": 6, "message": "issuer unreachable"})

    code, message, slept = _client(tmp_path, handler)
    assert code is ExitCode.TEMPORARY and message == "issuer unreachable"
    assert len(calls) == 3 and slept == [2.0, 4.0]


def test_a_missing_token_file_is_an_identity_error(tmp_path: Any) -> None:
    from image_updater.errors import UnauthenticatedError

    with pytest.raises(UnauthenticatedError, match="does not exist"):
        promote_remote(Promotion(server="http://x", app="a", source="b", target="c",
                                 digest=DIGEST), token_file=str(tmp_path / "none"),
                       secrets=SecretRegistry())


def test_a_body_past_the_ports_own_cap_is_413_not_an_internal_error(tmp_path: Any) -> None:
    """server.max_body_bytes below api.max_body_bytes: the port's cap stops a chunked body
    while the route reads it; the caller gets 413, not a 500 logged as a bug."""
    token = "a-token-0123456789abcdef"
    (tmp_path / "ci").write_text(token, encoding="utf-8")
    api = load_api({"tokens": [{"name": "ci", "file": str(tmp_path / "ci"), "apps": ["*"],
                                "envs": ["*"]}]}, "test")
    secrets = SecretRegistry()
    host = SimpleNamespace(runtime=SimpleNamespace(secrets=secrets,
                                                   settings=SimpleNamespace(api=api)))
    service = PromotionService(cast(Any, host), Authenticator(api, secrets=secrets))

    async def receive() -> dict[str, Any]:
        raise BodyTooLarge(100, "server.max_body_bytes")

    request = Request({"type": "http", "method": "POST", "path": "/api/v1/promotions",
                       "headers": [(b"authorization", f"Bearer {token}".encode()),
                                   (b"content-type", b"application/json")]}, receive)
    response, outcome = asyncio.run(handle(service, request))
    assert (response.status_code, outcome) == (413, "too_large")
    assert b"server.max_body_bytes" in response.body
