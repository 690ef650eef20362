"""Signature gates end to end: the real registry, real git, the CLI, the forge's API shape.

Signatures are made by tests/fixtures/cosign.py from the published formats (Debian's skopeo
cannot sign: its sigstore support is patched out) and carried between repositories by real
skopeo, which writes the ``.sig`` attachments at the destination itself. Each refusal leaves
git unchanged and opens no pull request; a signed digest goes through the seed flow.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from image_updater.changes import CycleResult
from image_updater.cli import main
from image_updater.config.policies import load_policies
from image_updater.config.settings import load_settings
from image_updater.engine.reconcile import reconcile
from image_updater.engine.status import EnvStatus, StatusDeps, gather
from image_updater.engine.verify import (
    REFUSAL_RECHECK_FIRST,
    Signed,
    VerifiedDigests,
    check_signatures,
)
from image_updater.exit_codes import ExitCode
from image_updater.observability.metrics import Metrics
from image_updater.observability.report import report
from image_updater.registry.base import Registry
from image_updater.secrets import SecretRegistry
from image_updater.signatures import PublicKey
from image_updater.wiring.runtime import Runtime
from tests.fixtures.cosign import (
    KeyPair,
    attach_bundle,
    attach_simple_signature,
    make_bundle,
    make_key_pair,
    sign_image,
    simple_signing_payload,
    skopeo_copy,
)
from tests.fixtures.forge_server import ForgeServer
from tests.fixtures.gitrepo import BareRepo, git, make_bare_repo
from tests.fixtures.registry import RegistryServer, push_image

pytestmark = pytest.mark.integration

TOKEN = "signature-gates-forge-token"
ENVS = ("dev", "staging", "prod")


class Gated:
    """One app whose environments all require a signature by ``keys/ci.pub`` (``dev_gated``
    False: dev takes any build, as a team that signs only what it promotes would have it)."""

    def __init__(self, registry: RegistryServer, forge: ForgeServer, tmp: Path, name: str,
                 *, dev_gated: bool = True) -> None:
        self.registry, self.forge, self.tmp = registry, forge, tmp
        self.repository = f"gate/{name}"
        self.image = f"{registry.host}/{self.repository}"
        self.deploy: BareRepo = make_bare_repo(tmp)
        self.policies = tmp / "policies"
        self.ci = make_key_pair(self.policies / "keys", name="ci")
        self.stranger = make_key_pair(tmp / "elsewhere", name="stranger")
        envs = "\n".join(
            f"  {e}: {{file: application-x/values-{e}.yaml"
            + (", approval: pull-request" if e == "prod" else "")
            + (", verify: false" if e == "dev" and not dev_gated else "") + "}" for e in ENVS)
        (self.policies / "application-x.yaml").write_text(
            f"app: application-x\nimage: {self.image}\n"
            f"git: {{url: \"file://{self.deploy.path}\", branch: master}}\n"
            "defaults:\n  verify: {cosign: {keys: [keys/ci.pub]}}\n"
            f"environments:\n{envs}\n")
        self.config = tmp / "settings.yaml"
        self.config.write_text(json.dumps({
            "cache_dir": str(tmp / "cache"),
            "registries": [{"host": registry.host, "insecure": True}],
            "forges": [{"url_prefix": f"file://{self.deploy.path}", "kind": "github",
                        "api_url": forge.api_url, "repository": "org/deploys",
                        "token_env": "GATES_FORGE_TOKEN"}]}))

    def cli(self, *args: str) -> int:
        return main([*args, "--config", str(self.config), "--policies", str(self.policies)])

    def push(self, tag: str, build: str) -> str:
        return push_image(self.registry.url, self.repository, tag, seed=build)

    def sign(self, digest: str, key: KeyPair | None = None) -> None:
        sign_image(self.registry.url, self.repository, digest, key or self.ci)

    def cycle(self) -> tuple[CycleResult, Metrics]:
        """One cycle through the library, reported into a fresh metrics registry."""
        settings = load_settings(str(self.config))
        apps = load_policies([self.policies])
        metrics = Metrics(CollectorRegistry())

        async def run() -> CycleResult:
            runtime = Runtime(settings, secrets=SecretRegistry(), metrics=metrics)
            try:
                return await reconcile(apps, runtime.deps())
            finally:
                await runtime.aclose()

        result = asyncio.run(run())
        report(result, metrics, log_outcomes=False)
        return result, metrics

    def deployed(self, env: str) -> str | None:
        text = self.deploy.show("master", f"application-x/values-{env}.yaml").decode()
        for line in text.splitlines():
            if line.strip().startswith("digest:"):
                words = line.split()
                return words[1] if len(words) > 1 and words[1].startswith("sha256:") else None
        return None

    def tag(self, tag: str) -> str | None:
        import httpx

        r = httpx.head(f"{self.registry.url}/v2/{self.repository}/manifests/{tag}", headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json"})
        return r.headers.get("docker-content-digest") if r.status_code == 200 else None

    def prs(self) -> list[int]:
        return [n for n, p in self.forge.prs.items() if p.state == "open"]


@pytest.fixture
def forge(monkeypatch: pytest.MonkeyPatch) -> Iterator[ForgeServer]:
    monkeypatch.setenv("GATES_FORGE_TOKEN", TOKEN)
    with ForgeServer("github", token=TOKEN) as server:
        yield server
        assert server.violations == []


def _failures(metrics: Metrics, reason: str, env: str = "dev") -> float | None:
    return metrics.registry.get_sample_value(
        "image_updater_verification_failures_total",
        {"app": "application-x", "env": env, "reason": reason})


# -- a signed digest goes through the whole seed flow -----------------------------------------


def test_a_signed_digest_goes_through_the_seed_flow_with_every_gate_on(
        registry: RegistryServer, forge: ForgeServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    gated = Gated(registry, forge, tmp_path, "seed")
    # CI builds and signs in its own repository, the claim naming the app's; real skopeo
    # copies image and signature (writing the .sig attachment itself) to the app's :dev
    ci_repo = f"gate/ci-{tmp_path.name}"
    build = push_image(registry.url, ci_repo, "dev", seed="signed-build")
    sign_image(registry.url, ci_repo, build, gated.ci, docker_reference=gated.image)
    skopeo_copy(f"{registry.host}/{ci_repo}:dev", f"{gated.image}:dev", tmp_path / "skopeo")
    assert gated.tag(f"{build.replace(':', '-')}.sig") is not None

    # dev: committed
    result, metrics = gated.cycle()
    assert [c.env for c in result.changes] == ["dev"], result.failures
    assert gated.deployed("dev") == build
    (checked,) = result.signatures
    assert checked.ok and checked.key == "keys/ci.pub" and checked.requests > 0
    # the next cycle asks nothing about signatures again (the process keeps the verdict)
    # and the CLI shows the candidate's signer
    assert main(["check", gated.image, "--strategy", "digest", "--tag", "dev", "--key",
                 str(gated.ci.public_path), "--config", str(gated.config)]) == 0
    assert f"signed by {gated.ci.public_path}" in capsys.readouterr().out

    # staging: promoted by digest, then committed
    assert gated.cli("promote", "application-x", "--from", "dev", "--to", "staging",
                     "--digest", build) == ExitCode.OK
    assert gated.tag("staging") == build
    result, _ = gated.cycle()
    assert [c.env for c in result.changes] == ["staging"], result.failures
    assert gated.deployed("staging") == build

    # prod: promoted, then proposed in a pull request
    assert gated.cli("promote", "application-x", "--from", "staging", "--to", "prod",
                     "--digest", build) == ExitCode.OK
    result, metrics = gated.cycle()
    assert result.failures == []
    (number,) = gated.prs()
    assert f"Image-Updater-Digest: {build}" in gated.forge.prs[number].body
    assert _failures(metrics, "unsigned", "prod") is None


def test_the_steady_state_asks_for_no_signature_again(registry: RegistryServer,
                                                      forge: ForgeServer, tmp_path: Path
                                                      ) -> None:
    gated = Gated(registry, forge, tmp_path, "steady")
    gated.sign(gated.push("dev", "steady"))
    settings = load_settings(str(gated.config))
    apps = load_policies([gated.policies])

    async def two_cycles() -> tuple[CycleResult, CycleResult]:
        runtime = Runtime(settings, secrets=SecretRegistry())
        try:
            return await reconcile(apps, runtime.deps()), await reconcile(apps, runtime.deps())
        finally:
            await runtime.aclose()

    first, second = asyncio.run(two_cycles())
    assert [c.env for c in first.changes] == ["dev"] and len(first.signatures) == 1
    assert second.changes == [] and second.signatures == []


def test_a_cosign_3_bundle_attached_as_a_referrer_opens_the_gate(
        registry: RegistryServer, forge: ForgeServer, tmp_path: Path) -> None:
    gated = Gated(registry, forge, tmp_path, "bundle")
    digest = gated.push("dev", "bundle-signed")
    attach_bundle(registry.url, gated.repository, digest,
                  make_bundle(gated.ci, digest, gated.image))
    assert gated.tag(f"{digest.replace(':', '-')}.sig") is None, "no simple signature"
    result, _ = gated.cycle()
    assert [c.env for c in result.changes] == ["dev"], result.failures
    assert gated.deployed("dev") == digest
    assert [(s.ok, s.key) for s in result.signatures] == [(True, "keys/ci.pub")]


# -- each refusal: nothing written, located, counted ------------------------------------------


def _unsigned(g: Gated, digest: str) -> None:
    del g, digest


def _wrong_key(g: Gated, digest: str) -> None:
    g.sign(digest, g.stranger)


def _wrong_digest(g: Gated, digest: str) -> None:
    other = g.push("other", f"other-{digest[-8:]}")
    attach_simple_signature(g.registry.url, g.repository, digest, g.ci,
                            payload=simple_signing_payload(g.image, other))


def _wrong_identity(g: Gated, digest: str) -> None:
    sign_image(g.registry.url, g.repository, digest, g.ci,
               docker_reference=f"{g.registry.host}/someone/else")


def _tampered(g: Gated, digest: str) -> None:
    payload = simple_signing_payload(g.image, digest)
    attach_simple_signature(g.registry.url, g.repository, digest, g.ci, payload=payload)
    blob = hashlib.sha256(payload).hexdigest()
    assert g.registry.workdir is not None
    stored = g.registry.workdir / "data/docker/registry/v2/blobs/sha256" / blob[:2] / blob
    (stored / "data").write_bytes(payload.replace(b"gate/", b"Gate/"))


def _malformed(g: Gated, digest: str) -> None:
    attach_simple_signature(g.registry.url, g.repository, digest, None,
                            payload=simple_signing_payload(g.image, digest),
                            signature="not base64 at all!")


REFUSALS = [
    ("unsigned", _unsigned, "sign it"),
    ("wrong-key", _wrong_key, "none of the keys verifies"),
    ("wrong-digest", _wrong_digest, "over another digest"),
    ("wrong-identity", _wrong_identity, "someone/else"),
    ("tampered", _tampered, "layer 0"),
    ("malformed", _malformed, "not base64"),
]


@pytest.mark.parametrize(("reason", "make", "detail"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_each_refusal_writes_nothing_and_is_counted(
        registry: RegistryServer, forge: ForgeServer, tmp_path: Path, reason: str,
        make: object, detail: str) -> None:
    gated = Gated(registry, forge, tmp_path, f"refuse-{reason}")
    digest = gated.push("dev", f"refused-{reason}")
    assert callable(make)
    make(gated, digest)
    head = gated.deploy.head()

    result, metrics = gated.cycle()

    assert gated.deploy.head() == head, "nothing is written"
    assert result.changes == [] and result.commits == []
    (failure,) = result.failures
    assert (failure.env, failure.unverified, failure.reason) == ("dev", reason, "unverified")
    assert "policies/application-x.yaml:" in failure.message
    assert digest in failure.message and detail in failure.message
    assert "Nothing was written" in failure.message
    assert _failures(metrics, reason) == 1.0
    assert result.signatures[0].reason == reason


def test_a_steady_unsigned_tag_is_asked_about_less_often_but_refused_every_cycle(
        registry: RegistryServer, forge: ForgeServer, tmp_path: Path) -> None:
    gated = Gated(registry, forge, tmp_path, "backoff")
    digest = gated.push("dev", "backoff-unsigned")
    settings, apps = load_settings(str(gated.config)), load_policies([gated.policies])
    now = [0.0]

    async def cycles(count: int, runtime: Runtime) -> list[tuple[CycleResult, Metrics]]:
        done = []
        for _ in range(count):
            metrics = Metrics(CollectorRegistry())
            result = await reconcile(apps, runtime.deps())
            report(result, metrics, log_outcomes=False)
            done.append((result, metrics))
            now[0] += 20.0
        return done

    async def run() -> list[tuple[CycleResult, Metrics]]:
        runtime = Runtime(settings, secrets=SecretRegistry())
        runtime.verified = VerifiedDigests(clock=lambda: now[0])
        try:
            refused = await cycles(3, runtime)
            gated.sign(digest)  # late: found once the delay is over
            refused += await cycles(1, runtime)
            now[0] += REFUSAL_RECHECK_FIRST
            return refused + await cycles(1, runtime)
        finally:
            await runtime.aclose()

    done = asyncio.run(run())
    # read in cycles 1 and 2; cycles 3 and 4 (within 60 s of the second refusal) ask nothing
    assert [len(r.signatures) for r, _ in done] == [1, 1, 0, 0, 1]
    for result, metrics in done[:4]:  # yet each of them refuses dev, counted once
        (failure,) = result.failures
        assert (failure.env, failure.unverified) == ("dev", "unsigned")
        assert _failures(metrics, "unsigned") == 1.0
    assert done[4][0].failures == [] and gated.deployed("dev") == digest


def test_a_refusal_is_counted_even_when_the_other_environments_push_fails(
        registry: RegistryServer, forge: ForgeServer, tmp_path: Path) -> None:
    gated = Gated(registry, forge, tmp_path, "push-fails")
    refused = gated.push("dev", "push-fails-unsigned")
    gated.sign(gated.push("staging", "push-fails-signed"))  # a commit for staging...
    hook = gated.deploy.path / "hooks" / "pre-receive"      # ...that the remote rejects
    hook.write_text("#!/bin/sh\necho 'no pushes today' >&2\nexit 1\n")
    hook.chmod(0o755)

    result, metrics = gated.cycle()

    failures = {f.env: f for f in result.failures}
    assert failures["dev"].unverified == "unsigned" and refused in failures["dev"].message
    assert failures["staging"].unverified == "" and failures["staging"].reason != "unverified"
    assert _failures(metrics, "unsigned") == 1.0


def test_once_fails_for_an_unsigned_dev_image(registry: RegistryServer, forge: ForgeServer,
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    gated = Gated(registry, forge, tmp_path, "once")
    gated.push("dev", "once-unsigned")
    head = gated.deploy.head()
    # staging and prod wait for their tags (handled), dev failed permanently: partial
    assert gated.cli("once") == ExitCode.PARTIAL
    assert gated.deploy.head() == head
    assert "FAILED application-x/dev" in capsys.readouterr().out


def test_an_unsigned_prod_digest_opens_no_pull_request(registry: RegistryServer,
                                                       forge: ForgeServer,
                                                       tmp_path: Path) -> None:
    gated = Gated(registry, forge, tmp_path, "pr")
    gated.push("prod", "prod-unsigned")
    head = gated.deploy.head()
    result, metrics = gated.cycle()
    assert gated.prs() == [] and forge.prs == {}
    assert gated.deploy.head() == head
    assert git("branch", "--list", "image-updater/*", cwd=gated.deploy.path) == ""
    assert [f.env for f in result.failures] == ["prod"]
    assert _failures(metrics, "unsigned", "prod") == 1.0


# -- a person's commands into a gated environment ---------------------------------------------


def test_promote_and_retag_into_a_gated_environment_refuse_an_unsigned_digest(
        registry: RegistryServer, forge: ForgeServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    gated = Gated(registry, forge, tmp_path, "promote", dev_gated=False)
    build = gated.push("dev", "unsigned-dev")
    assert gated.cli("once") == ExitCode.OK  # dev takes any build
    assert gated.deployed("dev") == build
    capsys.readouterr()

    code = gated.cli("promote", "application-x", "--from", "dev", "--to", "staging",
                     "--digest", build)
    assert code == ExitCode.UNVERIFIED == 11
    assert gated.tag("staging") is None, "the tag did not move"
    err = capsys.readouterr().err
    assert "application-x/staging requires a cosign signature" in err and "unsigned" in err
    assert gated.cli("promote", "application-x", "--from", "dev", "--to", "staging",
                     "--digest", build, "--force") == ExitCode.UNVERIFIED

    retag = main(["retag", f"{gated.image}:dev", f"{gated.image}:staging", "--config",
                  str(gated.config), "--policies", str(gated.policies)])
    assert retag == ExitCode.UNVERIFIED and gated.tag("staging") is None
    # signed, both go through
    gated.sign(build)
    assert gated.cli("promote", "application-x", "--from", "dev", "--to", "staging",
                     "--digest", build) == ExitCode.OK
    assert gated.tag("staging") == build


def test_rollback_to_an_unsigned_digest_is_refused_and_status_shows_unverified(
        registry: RegistryServer, forge: ForgeServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    gated = Gated(registry, forge, tmp_path, "rollback")
    good = gated.push("staging", "signed-staging")
    gated.sign(good)
    gated.cycle()
    assert gated.deployed("staging") == good
    unsigned = gated.push("staging", "unsigned-staging")
    head = gated.deploy.head()
    capsys.readouterr()

    assert gated.cli("rollback", "application-x", "staging", "--to", unsigned,
                     "--reason", "try the other build") == ExitCode.UNVERIFIED
    assert gated.deploy.head() == head, "nothing was written"
    assert "unsigned" in capsys.readouterr().err

    assert gated.cli("status", "application-x", "--env", "staging", "--format", "json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["state"] == "unverified"
    assert row["wanted"]["digest"] == unsigned and row["git"]["digest"] == good
    assert "unsigned" in row["unverified"]


def test_the_status_page_asks_nothing_about_a_digest_the_daemon_verified(
        registry: RegistryServer, forge: ForgeServer, tmp_path: Path) -> None:
    gated = Gated(registry, forge, tmp_path, "status-cost", dev_gated=True)
    gated.sign(gated.push("dev", "status-signed"))
    gated.push("staging", "status-unsigned")
    settings, apps = load_settings(str(gated.config)), load_policies([gated.policies])
    asked: list[str] = []

    async def counted(registry_: Registry, repository: str, digest: str, identity: str,
                      keys: tuple[PublicKey, ...]) -> Signed:
        asked.append(digest)
        return await check_signatures(registry_, repository, digest, identity, keys)

    async def run() -> dict[str, EnvStatus]:
        runtime = Runtime(settings, secrets=SecretRegistry())
        try:
            await reconcile(apps, runtime.deps())  # dev verified and committed
            deps = StatusDeps(registry_for=runtime.registry_for, repo_for=runtime.repo_for,
                              approvals_for=runtime.approvals_for, signatures=counted,
                              verified=runtime.verified)
            return {row.env: row for row in await gather(apps, deps)}
        finally:
            await runtime.aclose()

    rows = asyncio.run(run())
    assert rows["dev"].state == "in-sync"
    assert rows["staging"].state == "unverified"
    assert asked == [gated.tag("staging")]  # only the digest nobody verified yet
