"""The signature gate's plumbing, with a fake signature check (the real fetch and verify are
tested in tests/integration/test_signature_gates.py): once per (digest, key set, identity),
refusals located and counted, exit code 11, status ``unverified``."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import CollectorRegistry

from image_updater.changes import Change, CycleResult, SignatureCheck, Verification
from image_updater.engine.reconcile import _fail
from image_updater.engine.resolve import Resolved
from image_updater.engine.status import Observed, derive
from image_updater.engine.verify import (
    REFUSAL_RECHECK_MAX,
    Signed,
    VerifiedDigests,
    Verifier,
    retag_gate,
)
from image_updater.errors import UnverifiedError
from image_updater.exit_codes import ExitCode, exit_code_for, once_exit_code
from image_updater.model import (
    App,
    CosignVerify,
    Environment,
    GitTarget,
    Strategy,
    WriteSpec,
)
from image_updater.observability.metrics import Metrics
from image_updater.observability.report import report
from image_updater.registry.base import Registry
from image_updater.signatures import PublicKey, Reason, SignatureVerdict, load_public_key

IMAGE = "registry.example.com/team/shop"
DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def _key(name: str) -> PublicKey:
    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return load_public_key(pem, name=name)


CI, RELEASE = _key("keys/ci.pub"), _key("keys/release.pub")


def _app(verify: CosignVerify | None) -> App:
    env = Environment(name="prod", file="shop/prod.yaml", strategy=Strategy(tag="prod"),
                      write=WriteSpec(digest=("image", "digest")), line=7, verify=verify)
    return App(name="shop", image=IMAGE, git=GitTarget(url="https://git.example.com/d.git"),
               environments=(env,), source="policies/shop.yaml")


def _change(digest: str = DIGEST) -> Change:
    return Change(app="shop", env="prod", file="shop/prod.yaml", image=IMAGE, tag="prod",
                  digest=digest, keys=(), why="tag prod moved")


class FakeSignatures:
    """Answers from a table of digest -> verdict; records what it was asked."""

    def __init__(self, verdicts: dict[str, SignatureVerdict]) -> None:
        self.verdicts = verdicts
        self.asked: list[tuple[str, str, tuple[str, ...]]] = []

    async def __call__(self, _registry: Registry, repository: str, digest: str, identity: str,
                       keys: tuple[PublicKey, ...]) -> Signed:
        self.asked.append((digest, identity, tuple(k.name for k in keys)))
        return Signed(verdict=self.verdicts[digest], requests=3)


OK = SignatureVerdict(ok=True, key="keys/ci.pub", format="simple-signing", reason=None,
                      message="Image … is signed by keys/ci.pub.")
UNSIGNED = SignatureVerdict(ok=False, key=None, format=None, reason=Reason.UNSIGNED,
                            message="Image … has no cosign signature; sign it.")
WRONG_KEY = SignatureVerdict(ok=False, key=None, format="simple-signing",
                             reason=Reason.WRONG_KEY, message="Image … is signed by no listed "
                             "key; keys: keys/ci.pub; sign it with a listed key.")


def _check(verifier: Verifier, app: App, change: Change, signed: list[SignatureCheck]
           ) -> None:
    verifier.check(app, app.environments[0], change, [], signed)


def _run(verified: VerifiedDigests, fake: FakeSignatures, app: App,
         changes: list[Change]) -> tuple[list[SignatureCheck], list[BaseException]]:
    """One cycle's verifier, called from a worker thread as reconcile does."""
    for change in changes:  # the digest itself is taken as already derived from bytes
        verified.add(("registry.example.com", "team/shop", "prod", "", change.digest))
    signed: list[SignatureCheck] = []
    errors: list[BaseException] = []

    def registry_for(_host: str) -> Any:
        return object()

    async def cycle() -> None:
        verifier = Verifier(registry_for, verified, asyncio.get_running_loop(), fake)
        for change in changes:
            try:
                await asyncio.to_thread(_check, verifier, app, change, signed)
            except UnverifiedError as exc:
                errors.append(exc)

    asyncio.run(cycle())
    return signed, errors


def test_a_signed_digest_is_verified_once_per_process_for_one_key_set() -> None:
    verified, fake = VerifiedDigests(), FakeSignatures({DIGEST: OK})
    app = _app(CosignVerify(keys=(CI,)))
    signed, errors = _run(verified, fake, app, [_change(), _change()])
    assert errors == []
    assert fake.asked == [(DIGEST, IMAGE, ("keys/ci.pub",))]
    assert signed == [SignatureCheck(app="shop", env="prod", digest=DIGEST, ok=True,
                                     key="keys/ci.pub", reason=None, requests=3)]
    _run(verified, fake, app, [_change()])  # the next cycle: the process remembers
    assert len(fake.asked) == 1
    # another key set or another identity is another question
    _run(verified, fake, _app(CosignVerify(keys=(CI, RELEASE))), [_change()])
    _run(verified, fake, _app(CosignVerify(keys=(CI,), docker_reference="r.io/x")), [_change()])
    assert [a[1:] for a in fake.asked[1:]] == [(IMAGE, ("keys/ci.pub", "keys/release.pub")),
                                               ("r.io/x", ("keys/ci.pub",))]


def test_an_environment_without_verify_asks_for_no_signature() -> None:
    fake = FakeSignatures({})
    signed, errors = _run(VerifiedDigests(), fake, _app(None), [_change()])
    assert (fake.asked, signed, errors) == ([], [], [])


def test_a_refusal_is_located_asked_once_per_cycle_and_again_next_cycle() -> None:
    verified, fake = VerifiedDigests(), FakeSignatures({DIGEST: WRONG_KEY})
    app = _app(CosignVerify(keys=(CI,)))
    signed, errors = _run(verified, fake, app, [_change(), _change()])  # a re-plan
    assert len(fake.asked) == 1 and len(errors) == 2
    error = errors[0]
    assert isinstance(error, UnverifiedError) and error.verdict == "wrong-key"
    text = str(error)
    assert "shop/prod" in text and "policies/shop.yaml:7" in text and DIGEST in text
    assert "sign it with a listed key" in text and "Nothing was written" in text
    assert signed[0].ok is False and signed[0].reason == "wrong-key"
    _run(verified, fake, app, [_change()])  # a signature pushed later is seen next cycle
    assert len(fake.asked) == 2


def test_a_refusal_is_counted_by_report_with_its_reason() -> None:
    app = _app(CosignVerify(keys=(CI,)))
    result = CycleResult()
    _fail(result, app, app.environments[0],
          UnverifiedError("refused", verdict="unsigned"))
    metrics = Metrics(CollectorRegistry())
    report(result, metrics, log_outcomes=False)
    value = metrics.registry.get_sample_value(
        "image_updater_verification_failures_total",
        {"app": "shop", "env": "prod", "reason": "unsigned"})
    assert value == 1.0
    assert metrics.registry.get_sample_value(
        "image_updater_errors_total", {"app": "shop", "env": "prod", "reason": "unverified"}
    ) == 1.0


def test_other_failures_are_no_verification_failures() -> None:
    from image_updater.errors import ValuesError

    app = _app(CosignVerify(keys=(CI,)))
    result = CycleResult(verifications=[Verification("r", "x", DIGEST, "ok")])
    _fail(result, app, app.environments[0], ValuesError("no such key"))
    metrics = Metrics(CollectorRegistry())
    report(result, metrics, log_outcomes=False)
    assert result.failures[0].unverified == ""
    assert metrics.registry.get_sample_value(
        "image_updater_verification_failures_total",
        {"app": "shop", "env": "prod", "reason": "unsigned"}) is None


def test_an_unverified_digest_exits_11_from_promote_and_once() -> None:
    error = UnverifiedError("refused", verdict="tampered")
    assert exit_code_for(error) is ExitCode.UNVERIFIED is ExitCode(11)
    app = _app(CosignVerify(keys=(CI,)))
    result = CycleResult()
    _fail(result, app, app.environments[0], error)
    assert once_exit_code(result.failures, 0) is ExitCode.UNVERIFIED


@pytest.mark.parametrize(("git", "unverified", "state"), [
    ("sha256:" + "0" * 64, "refused: unsigned", "unverified"),
    ("sha256:" + "0" * 64, None, "pending"),
    (DIGEST, "refused: unsigned", "in-sync"),  # git holds it: what runs is what runs
])
def test_status_shows_unverified_instead_of_pending(git: str, unverified: str | None,
                                                     state: str) -> None:
    row = derive("shop", "prod", Observed(
        git_digest=git, git_tag="prod", resolved=Resolved(tag="prod", digest=DIGEST,
                                                          reason="tag prod"),
        unverified=unverified))
    assert row.state == state
    assert row.as_json()["unverified"] == (unverified if state == "unverified" else None)


def _no_registry(_host: str) -> Registry:
    raise AssertionError("choosing the gate asks no registry")


def test_retag_is_gated_only_where_a_gated_environment_follows_the_destination_tag() -> None:
    gated = _app(CosignVerify(keys=(CI,)))
    assert retag_gate([gated], f"{IMAGE}:prod", _no_registry) is not None
    assert retag_gate([gated], f"{IMAGE}:staging", _no_registry) is None
    assert retag_gate([gated], "registry.example.com/team/other:prod", _no_registry) is None
    assert retag_gate([_app(None)], f"{IMAGE}:prod", _no_registry) is None


def test_the_same_digest_for_two_apps_of_one_key_set_is_asked_once() -> None:
    verified, fake = VerifiedDigests(), FakeSignatures({DIGEST: OK, OTHER: UNSIGNED})
    app = _app(CosignVerify(keys=(CI,)))
    other = replace(app, name="shop-copy")
    _run(verified, fake, app, [_change()])
    _run(verified, fake, other, [replace(_change(), app="shop-copy")])
    assert len(fake.asked) == 1


def test_check_shows_under_each_kept_candidate_whether_it_is_signed() -> None:
    from image_updater.engine.check import render
    from image_updater.policy.strategies import Selection, TagVerdict

    selection = Selection("1.2.0", "highest of 2", (
        TagVerdict("1.2.0", True, "matches ^1", "1.2.0"),
        TagVerdict("1.1.0", True, "matches ^1", "1.1.0"),
        TagVerdict("2.0.0", False, "outside ^1")))
    text = render("r.io/shop", ["1.2.0", "1.1.0", "2.0.0"], selection, DIGEST,
                  {"1.2.0": "signed by keys/ci.pub", "1.1.0": "NOT signed (unsigned): …"})
    lines = text.splitlines()
    assert lines[lines.index(next(x for x in lines if "1.2.0" in x)) + 1].strip() == \
        "signed by keys/ci.pub"
    assert "NOT signed (unsigned)" in text
    assert sum("signed" in x for x in lines) == 2, "dropped tags are not checked"
    assert "signed" not in render("r.io/shop", ["1.2.0"], selection, DIGEST)


def test_a_steady_refusal_is_asked_less_often_and_a_late_signature_still_found() -> None:
    now = [1000.0]
    verified, fake = VerifiedDigests(clock=lambda: now[0]), FakeSignatures({DIGEST: UNSIGNED})
    app = _app(CosignVerify(keys=(CI,)))

    def cycle(after: float) -> list[BaseException]:
        now[0] += after
        return _run(verified, fake, app, [_change()])[1]

    assert len(cycle(0)) == 1 and len(fake.asked) == 1
    assert len(cycle(30)) == 1 and len(fake.asked) == 2   # the next cycle asks again
    # refused twice: not asked for 60 s, yet refused (and counted) every cycle meanwhile
    errors = cycle(30)
    assert len(fake.asked) == 2 and len(errors) == 1
    assert isinstance(errors[0], UnverifiedError) and errors[0].verdict == "unsigned"
    assert len(cycle(31)) == 1 and len(fake.asked) == 3   # 61 s after: asked, refused again
    assert len(cycle(119)) == 1 and len(fake.asked) == 3  # now 120 s
    for _ in range(10):                                   # the delay stops growing at 600 s
        cycle(REFUSAL_RECHECK_MAX)
    asked = len(fake.asked)
    fake.verdicts[DIGEST] = OK                            # the signature arrives late
    assert cycle(REFUSAL_RECHECK_MAX) == [] and len(fake.asked) == asked + 1
    assert cycle(REFUSAL_RECHECK_MAX) == [] and len(fake.asked) == asked + 1  # kept as ok


def test_a_refusal_remembered_for_one_key_set_says_nothing_about_another() -> None:
    verified, fake = VerifiedDigests(clock=lambda: 0.0), FakeSignatures({DIGEST: UNSIGNED})
    for _ in range(3):
        _run(verified, fake, _app(CosignVerify(keys=(CI,))), [_change()])
    assert len(fake.asked) == 2                           # the third was remembered
    fake.verdicts[DIGEST] = OK
    signed, errors = _run(verified, fake, _app(CosignVerify(keys=(CI, RELEASE))), [_change()])
    assert errors == [] and signed[0].ok and len(fake.asked) == 3


def test_an_unsigned_platform_digest_says_to_sign_recursively() -> None:
    pinned = _app(CosignVerify(keys=(CI,)))
    env = replace(pinned.environments[0],
                              strategy=Strategy(tag="prod", platform="linux/arm64"))
    pinned = replace(pinned, environments=(env,))
    verified = VerifiedDigests()  # the platform's digest, as derived from the index
    verified.add(("registry.example.com", "team/shop", "prod", "linux/arm64", DIGEST))
    errors = _run(verified, FakeSignatures({DIGEST: UNSIGNED}), pinned, [_change()])[1]
    assert "pins platform linux/arm64" in str(errors[0]) and "--recursive" in str(errors[0])
    errors = _run(VerifiedDigests(), FakeSignatures({DIGEST: UNSIGNED}),
                  _app(CosignVerify(keys=(CI,))), [_change()])[1]
    assert "--recursive" not in str(errors[0])


def _one_cycle(verified: VerifiedDigests, fake: Any, checks: list[tuple[App, Change]]
               ) -> list[BaseException | None]:
    """One verifier, asked about each (app, change) in turn; what each raised."""
    outcomes: list[BaseException | None] = []

    async def cycle() -> None:
        verifier = Verifier(lambda _host: object(), verified,  # type: ignore[arg-type,return-value]
                            asyncio.get_running_loop(), fake)
        for app, change in checks:
            try:
                await asyncio.to_thread(_check, verifier, app, change, [])
                outcomes.append(None)
            except UnverifiedError as exc:
                outcomes.append(exc)

    asyncio.run(cycle())
    return outcomes


def _named(name: str, image: str, verify: CosignVerify) -> App:
    return replace(_app(verify), name=name, image=image)


def test_a_refusal_shared_by_two_apps_names_each_app_in_its_own_message() -> None:
    verified, fake = VerifiedDigests(), FakeSignatures({DIGEST: UNSIGNED})
    spec = CosignVerify(keys=(CI,))
    shop, cafe = _named("shop", IMAGE, spec), _named("cafe", IMAGE, spec)
    verified.add(("registry.example.com", "team/shop", "prod", "", DIGEST))
    first, second = _one_cycle(verified, fake, [(shop, _change()), (cafe, _change())])
    assert len(fake.asked) == 1                      # one question for both
    assert str(first).startswith("shop/prod ") and str(second).startswith("cafe/prod ")


def test_a_refusal_in_one_repository_is_not_taken_for_another() -> None:
    # two repositories promoted under one identity: the signature is only in the second
    identity = "registry.example.com/team/shop"
    spec = CosignVerify(keys=(CI,), docker_reference=identity)
    mirror = _named("mirror", "registry.example.com/mirror/shop", spec)
    shop = _named("shop", IMAGE, spec)

    async def signatures(_registry: Registry, repository: str, digest: str, _identity: str,
                         _keys: tuple[PublicKey, ...]) -> Signed:
        asked.append(repository)
        return Signed(verdict=OK if repository == "team/shop" else UNSIGNED, requests=3)

    asked: list[str] = []
    verified = VerifiedDigests()
    verified.add(("registry.example.com", "mirror/shop", "prod", "", DIGEST))
    verified.add(("registry.example.com", "team/shop", "prod", "", DIGEST))
    outcomes = _one_cycle(verified, signatures, [(mirror, _change()), (shop, _change())])
    assert isinstance(outcomes[0], UnverifiedError) and outcomes[1] is None
    assert asked == ["mirror/shop", "team/shop"]
