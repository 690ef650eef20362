"""The dev loop end to end: a real registry, real bare git repositories, the real engine.

Faults are real too: a closed port, a registry answering 5xx (scripted stub), a repository
that does not exist, a missing tag, a missing values file, a missing key.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from image_updater.changes import CycleResult
from image_updater.cli import main
from image_updater.commands import run_once
from image_updater.config.policies import load_text
from image_updater.config.settings import GitSettings, RegistrySettings, Settings
from image_updater.model import App
from image_updater.secrets import SecretRegistry
from tests.fixtures.gitrepo import OLD_DIGEST, VALUES_FILES, BareRepo, git, make_bare_repo
from tests.fixtures.http_stub import HttpStub, Reply
from tests.fixtures.registry import RegistryServer, free_port, push_image

pytestmark = pytest.mark.integration

DEV = "application-x/values-dev.yaml"


def policy(name: str, image: str, repo: BareRepo, envs: str = "dev: {file: " + DEV + "}",
           ) -> str:
    return textwrap.dedent(f"""\
        app: {name}
        image: {image}
        git: {{url: "file://{repo.path}", branch: master}}
        environments:
        """) + textwrap.indent(envs, "  ") + "\n"


def load(*docs: str) -> list[App]:
    apps, problems = load_text("---\n".join(docs), "test-policies.yaml")
    assert problems == []
    return apps


def settings_for(tmp_path: Path, *hosts: str) -> Settings:
    return Settings(cache_dir=str(tmp_path / "cache"),
                    registries=tuple(RegistrySettings(host=h, insecure=True, timeout=2,
                                                      max_retries=1)
                                     for h in hosts),
                    git=GitSettings(author_name="image-updater",
                                    author_email="bot@example.com"))


def cycle(settings: Settings, apps: list[App], dry_run: bool = False) -> CycleResult:
    return asyncio.run(run_once(settings, apps, dry_run=dry_run))


def commit_count(repo: BareRepo) -> int:
    return int(git("rev-list", "--count", "master", cwd=repo.path))


@pytest.fixture
def deploy(tmp_path: Path) -> BareRepo:
    return make_bare_repo(tmp_path)


def test_new_dev_digest_is_committed_once_touching_one_line(
        registry: RegistryServer, deploy: BareRepo, tmp_path: Path) -> None:
    apps = load(policy("application-x", f"{registry.host}/loop/application-x", deploy))
    settings = settings_for(tmp_path, registry.host)
    digest_a = push_image(registry.url, "loop/application-x", "dev", seed="A")

    result = cycle(settings, apps)
    assert [c.digest for c in result.changes] == [digest_a]
    assert result.failures == []
    assert f"digest: {digest_a}  # written by image-updater" in deploy.show("master", DEV).decode()
    numstat = git("show", "--numstat", "--format=", "master", cwd=deploy.path)
    assert numstat.split() == ["1", "1", DEV]  # exactly one line changed, in one file
    message = git("log", "-1", "--format=%B", "master", cwd=deploy.path)
    assert f"Image-Updater-Digest: {digest_a}" in message
    assert "Image-Updater-App: application-x" in message

    digest_b = push_image(registry.url, "loop/application-x", "dev", seed="A-prime")
    result = cycle(settings, apps)
    assert [c.digest for c in result.changes] == [digest_b]
    assert [k.old for k in result.changes[0].keys] == [digest_a]
    assert f"digest: {digest_b}" in deploy.show("master", DEV).decode()
    count = commit_count(deploy)

    result = cycle(settings, apps)  # a second pass with nothing new: no commit
    assert result.changes == [] and result.failures == []
    assert result.unchanged == [("application-x", "dev")]
    assert commit_count(deploy) == count


def test_all_changes_of_one_cycle_share_one_commit(
        registry: RegistryServer, deploy: BareRepo, tmp_path: Path) -> None:
    envs = "\n".join(f"{e}: {{file: application-x/values-{e}.yaml}}"
                     for e in ("dev", "staging", "prod"))
    apps = load(policy("application-x", f"{registry.host}/one/application-x", deploy, envs))
    digests = {e: push_image(registry.url, "one/application-x", e, seed=e)
               for e in ("dev", "staging", "prod")}
    before = commit_count(deploy)
    result = cycle(settings_for(tmp_path, registry.host), apps)
    assert {c.env: c.digest for c in result.changes} == digests
    assert commit_count(deploy) == before + 1
    files = git("show", "--name-only", "--format=", "master", cwd=deploy.path).split()
    assert sorted(files) == sorted(VALUES_FILES)


def test_dry_run_prints_the_diff_and_writes_nothing(
        registry: RegistryServer, deploy: BareRepo, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    digest = push_image(registry.url, "dry/application-x", "dev", seed="dry")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "app.yaml").write_text(
        policy("application-x", f"{registry.host}/dry/application-x", deploy))
    (tmp_path / "settings.yaml").write_text(
        f"cache_dir: {tmp_path / 'cache'}\nregistries: [{{host: '{registry.host}', "
        "insecure: true}]\n")
    head = deploy.head()
    code = main(["once", "--dry-run", "--config", str(tmp_path / "settings.yaml"),
                 "--policies", str(policies)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"-  digest: {OLD_DIGEST}" in out and f"+  digest: {digest}" in out
    assert "Image-Updater-Digest: " + digest in out  # the commit message it would write
    assert deploy.head() == head


@pytest.fixture
def failing_stub() -> Iterator[HttpStub]:
    stub = HttpStub()
    stub.start()
    stub.add("HEAD", "/v2/broken/app/manifests/dev", Reply(status=503))
    stub.add("GET", "/v2/", Reply(status=200))
    yield stub
    stub.stop()


def test_one_apps_failure_never_stops_the_others(
        registry: RegistryServer, tmp_path: Path, failing_stub: HttpStub) -> None:
    files = dict(VALUES_FILES)
    files["nokey/values.yaml"] = "image:\n  repository: x\n"
    deploy = make_bare_repo(tmp_path, files)
    closed = f"127.0.0.1:{free_port()}"
    stub_host = failing_stub.host
    good = push_image(registry.url, "iso/good", "dev", seed="good")
    push_image(registry.url, "iso/nokey", "dev", seed="nokey")
    push_image(registry.url, "iso/nofile", "dev", seed="nofile")
    push_image(registry.url, "iso/notag", "other", seed="notag")
    apps = load(
        policy("good", f"{registry.host}/iso/good", deploy),
        policy("missing-tag", f"{registry.host}/iso/notag", deploy,
               "dev: {file: application-x/values-staging.yaml}"),
        policy("missing-repo", f"{registry.host}/iso/does-not-exist", deploy,
               "dev: {file: application-x/values-prod.yaml}"),
        policy("refused", f"{closed}/iso/app", deploy, "dev: {file: a/values.yaml}"),
        policy("server-error", f"{stub_host}/broken/app", deploy, "dev: {file: b/values.yaml}"),
        policy("no-file", f"{registry.host}/iso/nofile", deploy,
               "dev: {file: missing/values.yaml}"),
        policy("no-key", f"{registry.host}/iso/nokey", deploy, "dev: {file: nokey/values.yaml}"),
    )
    settings = settings_for(tmp_path, registry.host, closed, stub_host)
    result = cycle(settings, apps)

    assert [c.app for c in result.changes] == ["good"]
    assert f"digest: {good}" in deploy.show("master", DEV).decode()
    failures = {f.app: f for f in result.failures}
    assert sorted(failures) == ["missing-repo", "no-file", "no-key", "refused", "server-error"]
    # a tag that does not exist yet is waited for, not a failure
    assert [(w.app, w.env, w.tag) for w in result.waiting] == [("missing-tag", "dev", "dev")]
    assert "iso/does-not-exist" in failures["missing-repo"].message
    assert closed in failures["refused"].message and failures["refused"].temporary
    assert stub_host in failures["server-error"].message and failures["server-error"].temporary
    assert "missing/values.yaml does not exist" in failures["no-file"].message
    assert "has no key image.digest" in failures["no-key"].message
    for name in ("missing-repo", "no-file", "no-key"):
        assert not failures[name].temporary, name
    # nothing but the good app's line changed
    for path in ("application-x/values-staging.yaml", "application-x/values-prod.yaml"):
        assert deploy.show("master", path).decode() == VALUES_FILES[path]
    assert deploy.show("master", "nokey/values.yaml").decode() == files["nokey/values.yaml"]
    assert len(failing_stub.requests_to("HEAD", "/v2/broken/app/manifests/dev")) > 1  # retried


def test_once_exit_code_is_the_error_s_when_every_environment_failed(
        registry: RegistryServer, deploy: BareRepo, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "app.yaml").write_text(
        policy("application-x", f"{registry.host}/exit/missing", deploy))
    (tmp_path / "settings.yaml").write_text(
        f"cache_dir: {tmp_path / 'cache'}\nregistries: [{{host: '{registry.host}', "
        "insecure: true}]\n")
    assert main(["once", "--config", str(tmp_path / "settings.yaml"),
                 "--policies", str(policies)]) == 3  # not found; 7 needs one env applied
    printed = capsys.readouterr()
    # each failure is shown once: the FAILED line, not also an ERROR log line
    assert "FAILED application-x/dev: Repository exit/missing does not exist" in printed.out
    assert (printed.out + printed.err).count("exit/missing does not exist") == 1
    assert not [r for r in caplog.records if "exit/missing" in r.getMessage()]


def test_restart_gives_the_same_result(registry: RegistryServer, deploy: BareRepo,
                                       tmp_path: Path) -> None:
    """Git is the only state: a fresh cache (a restarted pod) sees nothing to do."""
    apps = load(policy("application-x", f"{registry.host}/restart/application-x", deploy))
    push_image(registry.url, "restart/application-x", "dev", seed="r")
    assert len(cycle(settings_for(tmp_path / "first", registry.host), apps).changes) == 1
    count = commit_count(deploy)
    again = cycle(settings_for(tmp_path / "second", registry.host), apps)
    assert again.changes == [] and commit_count(deploy) == count


def _index_reply(body: bytes) -> Reply:
    """A registry answer whose digest header is honest for a body that is not a real index."""
    import hashlib

    return Reply(200, {"Content-Type": "application/vnd.oci.image.index.v1+json",
                       "Docker-Content-Digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                       "Content-Length": str(len(body))}, body)


def test_malformed_registry_answers_fail_only_the_environments_they_concern(
        registry: RegistryServer, tmp_path: Path) -> None:
    """An index that is JSON but not an object, a tag listing that answers 500 while the
    tag HEADs work, and one tag of a shared repository answering 502: each fails its own
    environments with a message, never the cycle or the other tags of that repository."""
    deploy = make_bare_repo(tmp_path)
    good = push_image(registry.url, "shape/good", "dev", seed="good")
    with HttpStub() as stub:
        odd = b'["not", "an", "index"]'
        stub.add("GET", "/v2/", Reply(200))
        stub.add("HEAD", "/v2/odd/index/manifests/dev", _index_reply(odd))
        stub.add("GET", "/v2/odd/index/manifests/dev", _index_reply(odd))
        by_digest = _index_reply(odd).headers["Docker-Content-Digest"]
        stub.add("GET", f"/v2/odd/index/manifests/{by_digest}", _index_reply(odd))
        empty = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",' \
                b' "manifests": []}'
        stub.add("HEAD", "/v2/shared/app/manifests/dev", _index_reply(empty))
        # the digest shared-follow writes is verified first: the tag's manifest is fetched
        # and hashed
        stub.add("GET", "/v2/shared/app/manifests/dev", _index_reply(empty))
        stub.add("HEAD", "/v2/shared/app/manifests/prod", Reply(502))
        stub.add("GET", "/v2/shared/app/tags/list", Reply(500))
        apps = load(
            policy("good", f"{registry.host}/shape/good", deploy),
            policy("odd-index", f"{stub.host}/odd/index", deploy,
                   "dev: {file: application-x/values-staging.yaml, platform: linux/amd64}"),
            policy("shared-follow", f"{stub.host}/shared/app", deploy,
                   "dev: {file: application-x/values-prod.yaml}"),
            policy("shared-semver", f"{stub.host}/shared/app", deploy,
                   "dev: {file: other/values.yaml, strategy: semver, constraint: '^1'}"),
            policy("shared-prod", f"{stub.host}/shared/app", deploy,
                   "dev: {file: third/values.yaml, tag: prod}"),
        )
        result = cycle(settings_for(tmp_path, registry.host, stub.host), apps)
        where = f"{stub.host}/odd/index"

    assert sorted(c.app for c in result.changes) == ["good", "shared-follow"]
    assert f"digest: {good}" in deploy.show("master", DEV).decode()
    failures = {f.app: f for f in result.failures}
    assert sorted(failures) == ["odd-index", "shared-prod", "shared-semver"]
    assert "shared/app/manifests/prod" in failures["shared-prod"].message
    assert "malformed index" in failures["odd-index"].message
    assert where in failures["odd-index"].message
    assert failures["odd-index"].reason == "registry"
    assert "shared/app/tags/list" in failures["shared-semver"].message
    assert failures["shared-semver"].temporary


def test_an_unforeseen_fault_in_one_deploy_repository_spares_the_others(
        registry: RegistryServer, tmp_path: Path) -> None:
    """A bug-shaped exception (not one of ours) while applying one repository's changes is
    reported against its environments; the other repository still gets its commit."""
    import dataclasses

    from image_updater.engine.reconcile import reconcile
    from image_updater.wiring.runtime import Runtime

    healthy, faulty = make_bare_repo(tmp_path / "a"), make_bare_repo(tmp_path / "b")
    digest = push_image(registry.url, "fault/app", "dev", seed="fault")
    apps = load(policy("healthy", f"{registry.host}/fault/app", healthy),
                policy("faulty", f"{registry.host}/fault/app", faulty))

    async def run() -> CycleResult:
        runtime = Runtime(settings_for(tmp_path, registry.host), secrets=SecretRegistry())
        deps = runtime.deps()

        def repo_for(target):  # type: ignore[no-untyped-def]
            if target.url == f"file://{faulty.path}":
                raise RuntimeError("injected fault")
            return deps.repo_for(target)

        try:
            return await reconcile(apps, dataclasses.replace(deps, repo_for=repo_for))
        finally:
            await runtime.aclose()

    result = asyncio.run(run())
    assert [c.app for c in result.changes] == ["healthy"]
    assert f"digest: {digest}" in healthy.show("master", DEV).decode()
    (failure,) = result.failures
    assert failure.app == "faulty" and failure.reason == "internal"
    assert "RuntimeError" in failure.message and "injected fault" in failure.message
    assert faulty.show("master", DEV).decode() == VALUES_FILES[DEV]


def test_newest_build_never_falls_back_to_an_older_build_on_a_passing_fault(
        tmp_path: Path) -> None:
    """The newest tag answers 503 this cycle: choosing the next-newest would move the
    environment backwards. The environment fails (temporary) and nothing is written."""
    deploy = make_bare_repo(tmp_path)
    import hashlib

    body = b'{"schemaVersion": 2}'
    head = Reply(200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json",
                       "Docker-Content-Digest": "sha256:" + hashlib.sha256(body).hexdigest()})
    with HttpStub() as stub:
        stub.add("GET", "/v2/", Reply(200))
        stub.add("GET", "/v2/team/api/tags/list", Reply(
            200, {"Content-Type": "application/json"}, b'{"tags": ["1.1.0", "1.2.0"]}'))
        stub.add("HEAD", "/v2/team/api/manifests/1.1.0", head)
        stub.add("HEAD", "/v2/team/api/manifests/1.2.0", Reply(503))
        apps = load(policy("api", f"{stub.host}/team/api", deploy,
                           f"dev: {{file: {DEV}, strategy: newest-build}}"))
        result = cycle(settings_for(tmp_path, stub.host), apps)
        manifests_read = stub.requests_to("GET", "/v2/team/api/manifests/" + head.headers[
            "Docker-Content-Digest"])

    (failure,) = result.failures
    assert failure.temporary and "manifests/1.2.0" in failure.message
    assert result.changes == [] and manifests_read == []
    assert deploy.show("master", DEV).decode() == VALUES_FILES[DEV]


# -- digest verification ------------------------------------------------------------------

def _manifest_gets(registry: RegistryServer, repository: str, start: int) -> list[str]:
    """References (tags or digests) of the manifests GET in ``repository`` since access-log
    line ``start``."""
    prefix = f"GET /v2/{repository}/manifests/"
    out = []
    for line in registry.access_log_lines()[start:]:
        request = line.split('"', 2)[1]
        if request.startswith(prefix):
            out.append(request.split()[1].rsplit("/", 1)[1])
    return out


def test_a_moved_digest_is_verified_once_and_steady_tags_never(
        registry: RegistryServer, deploy: BareRepo, tmp_path: Path) -> None:
    """Every digest about to be written is derived again from its tag's manifest bytes, once
    per (tag, digest) and process; a tag whose digest git already holds costs no manifest GET."""
    from prometheus_client import CollectorRegistry

    from image_updater.engine.reconcile import reconcile
    from image_updater.observability.metrics import Metrics
    from image_updater.observability.report import report
    from image_updater.wiring.runtime import Runtime

    repository = "verify/application-x"
    first = push_image(registry.url, repository, "dev", seed="v1")
    push_image(registry.url, repository, "staging", seed="v1")  # the same image: one digest
    apps = load(policy("application-x", f"{registry.host}/{repository}", deploy,
                       "dev: {file: application-x/values-dev.yaml}\n"
                       "staging: {file: application-x/values-staging.yaml}"))
    metrics = Metrics(CollectorRegistry())
    runtime = Runtime(settings_for(tmp_path, registry.host), metrics=metrics,
                      secrets=SecretRegistry())  # the daemon's

    async def run_cycle() -> tuple[CycleResult, list[str]]:
        start = len(registry.access_log_lines())
        result = await reconcile(apps, runtime.deps())
        report(result, metrics)
        return result, _manifest_gets(registry, repository, start)

    async def cycles() -> tuple[tuple[CycleResult, list[str]], ...]:
        # one event loop for every cycle, as in the daemon: the clients keep their connections
        try:
            moved = await run_cycle()
            steady = await run_cycle()
            push_image(registry.url, repository, "dev", seed="v2")
            return moved, steady, await run_cycle()
        finally:
            await runtime.aclose()

    (moved, moved_gets), (steady, steady_gets), (again, again_gets) = asyncio.run(cycles())
    second = push_image(registry.url, repository, "dev", seed="v2")  # same seed: its digest

    assert sorted(c.env for c in moved.changes) == ["dev", "staging"]
    assert sorted(moved_gets) == ["dev", "staging"]  # each tag's manifest, read and hashed
    assert [v.result for v in moved.verifications] == ["ok", "ok"]
    assert {v.digest for v in moved.verifications} == {first}
    assert steady.changes == [] and steady_gets == [] and steady.verifications == []
    assert [c.env for c in again.changes] == ["dev"]
    assert again_gets == ["dev"]  # staging still holds the first: not fetched again
    assert [v.digest for v in again.verifications] == [second]
    assert metrics.registry.get_sample_value("image_updater_verifications_total",
                                             {"result": "ok"}) == 3


def test_a_digest_that_does_not_hash_to_itself_fails_only_its_environment(
        registry: RegistryServer, deploy: BareRepo, tmp_path: Path) -> None:
    """A registry whose HEAD names one digest while the manifest it serves hashes to another
    (corrupt or tampered): nothing is written for that environment, the others go on."""
    good = push_image(registry.url, "verify/good", "dev", seed="good")
    honest = _index_reply(b'{"schemaVersion": 2, "manifests": []}')
    claimed = honest.headers["Docker-Content-Digest"]
    with HttpStub() as stub:
        stub.add("GET", "/v2/", Reply(200))
        stub.add("HEAD", "/v2/tampered/app/manifests/dev", honest)
        tampered = b'{"schemaVersion": 2, "manifests": [] }'
        for reference in ("dev", claimed):  # by tag (the verification) and by digest
            stub.add("GET", f"/v2/tampered/app/manifests/{reference}",
                     Reply(200, {**honest.headers, "Content-Length": str(len(tampered))},
                           tampered))
        apps = load(policy("good", f"{registry.host}/verify/good", deploy),
                    policy("tampered", f"{stub.host}/tampered/app", deploy,
                           "dev: {file: application-x/values-staging.yaml}"))
        before = deploy.show("master", "application-x/values-staging.yaml")
        result = cycle(settings_for(tmp_path, registry.host, stub.host), apps)
        host = stub.host

    assert [c.app for c in result.changes] == ["good"]
    assert f"digest: {good}" in deploy.show("master", DEV).decode()
    assert deploy.show("master", "application-x/values-staging.yaml") == before
    (failure,) = result.failures
    assert (failure.app, failure.reason) == ("tampered", "digest_mismatch")
    assert host in failure.message and "tampered/app" in failure.message
    assert claimed in failure.message
    assert [v.result for v in result.verifications if v.repository == "tampered/app"] == [
        "mismatch"]
