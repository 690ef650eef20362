"""Trust what it writes: the real registry behind a fault proxy that lies.

Every digest written to git is derived again from the bytes of the tag's manifest, read from
the configured registry host; a lying ``Docker-Content-Digest``, a body that does not hash to
its digest, or a manifest redirected to another host never reaches git.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from image_updater.changes import CycleResult
from image_updater.commands import run_once
from image_updater.config.policies import load_text
from image_updater.config.settings import (
    GitSettings,
    LimitSettings,
    RegistrySettings,
    Settings,
)
from tests.fixtures.fault_proxy import FaultProxy
from tests.fixtures.gitrepo import BareRepo, git, make_bare_repo
from tests.fixtures.registry import RegistryServer, push_image

pytestmark = pytest.mark.integration

DEV = "application-x/values-dev.yaml"
REPO = "trust/application-x"


@pytest.fixture
def deploy(tmp_path: Path) -> BareRepo:
    return make_bare_repo(tmp_path)


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    with FaultProxy(registry.url) as p:
        yield p


def cycle(tmp_path: Path, proxy: FaultProxy, deploy: BareRepo,
          limits: LimitSettings | None = None) -> CycleResult:
    text = textwrap.dedent(f"""\
        app: application-x
        image: {proxy.host}/{REPO}
        git: {{url: "file://{deploy.path}", branch: master}}
        environments:
          dev: {{file: {DEV}}}
        """)
    apps, problems = load_text(text, "trust.yaml")
    assert problems == []
    settings = Settings(cache_dir=str(tmp_path / "cache"),
                        registries=(RegistrySettings(host=proxy.host, insecure=True, timeout=2,
                                                     max_retries=0),),
                        git=GitSettings(author_name="image-updater",
                                        author_email="bot@example.com"),
                        limits=limits or LimitSettings())
    return asyncio.run(run_once(settings, apps))


def head(deploy: BareRepo) -> str:
    return git("rev-parse", "master", cwd=deploy.path).strip()


def test_a_lying_digest_header_naming_another_image_is_never_written(
        registry: RegistryServer, proxy: FaultProxy, deploy: BareRepo, tmp_path: Path) -> None:
    """The lie names an image that exists in the same repository (an older build): reading
    it by digest would succeed, so only the tag's own bytes can expose it."""
    older = push_image(registry.url, REPO, "old", seed="older build")
    real = push_image(registry.url, REPO, "dev", seed="tested build")
    proxy.rewrite_header("HEAD", rf"/v2/{REPO}/manifests/dev", "Docker-Content-Digest", older)
    before = head(deploy)

    result = cycle(tmp_path, proxy, deploy)

    assert result.changes == [] and head(deploy) == before
    (failure,) = result.failures
    assert failure.reason == "digest_mismatch"
    assert older in failure.message and real in failure.message  # both digests named
    assert proxy.host in failure.message and "Nothing was written" in failure.message
    assert [v.result for v in result.verifications] == ["mismatch"]

    proxy.clear()  # the honest registry: the same cycle now writes the real digest
    healed = cycle(tmp_path, proxy, deploy)
    assert [c.digest for c in healed.changes] == [real]
    assert f"digest: {real}" in deploy.show("master", DEV).decode()


def test_a_lying_digest_header_naming_nothing_is_never_written(
        registry: RegistryServer, proxy: FaultProxy, deploy: BareRepo, tmp_path: Path) -> None:
    real = push_image(registry.url, REPO, "dev", seed="nothing")
    invented = "sha256:" + "0" * 64
    proxy.rewrite_header("HEAD", rf"/v2/{REPO}/manifests/dev", "Docker-Content-Digest", invented)
    before = head(deploy)

    result = cycle(tmp_path, proxy, deploy)

    assert result.changes == [] and head(deploy) == before
    (failure,) = result.failures
    assert failure.reason == "digest_mismatch"
    assert invented in failure.message and real in failure.message


def test_a_manifest_body_that_does_not_hash_to_its_digest_is_refused(
        registry: RegistryServer, proxy: FaultProxy, deploy: BareRepo, tmp_path: Path) -> None:
    """A caching proxy serving stale bytes under the current digest header."""
    stale = push_image(registry.url, REPO, "stale", seed="stale bytes")
    real = push_image(registry.url, REPO, "dev", seed="current bytes")
    stale_body = httpx.get(f"{registry.url}/v2/{REPO}/manifests/{stale}",
                           headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
                           ).content
    proxy.replace_body("GET", rf"/v2/{REPO}/manifests/dev", stale_body)
    before = head(deploy)

    result = cycle(tmp_path, proxy, deploy)

    assert result.changes == [] and head(deploy) == before
    (failure,) = result.failures
    assert failure.reason == "digest_mismatch"
    assert real in failure.message and stale in failure.message


def test_a_manifest_redirected_to_another_host_is_never_written(
        registry: RegistryServer, proxy: FaultProxy, deploy: BareRepo, tmp_path: Path) -> None:
    """Another registry (somebody else's image under the same name) answers HEAD and GET
    consistently: hashing alone would accept it, so manifests are taken from the configured
    host only."""
    push_image(registry.url, REPO, "dev", seed="ours")
    with RegistryServer() as elsewhere:
        theirs = push_image(elsewhere.url, REPO, "dev", seed="theirs")
        proxy.redirect("*", rf"/v2/{REPO}/manifests/.*", to=elsewhere.url)
        before = head(deploy)
        result = cycle(tmp_path, proxy, deploy)
        other_host = elsewhere.host

    assert result.changes == [] and head(deploy) == before
    assert theirs not in deploy.show("master", DEV).decode()
    (failure,) = result.failures
    assert f"redirected http://{proxy.host}/v2/{REPO}/manifests/dev" in failure.message
    assert other_host in failure.message
    assert "only from the configured registry host" in failure.message


def test_the_values_file_cap_is_the_settings_one_and_is_checked_before_parsing(
        registry: RegistryServer, proxy: FaultProxy, deploy: BareRepo, tmp_path: Path) -> None:
    """``limits.values_file_bytes`` reaches the engine: below the file's size nothing is
    parsed or written and the message names file, size and setting; above it, it is written."""
    real = push_image(registry.url, REPO, "dev", seed="cap")
    size = len(deploy.show("master", DEV))
    before = head(deploy)

    refused = cycle(tmp_path, proxy, deploy, LimitSettings(values_file_bytes=size - 1))
    assert refused.changes == [] and head(deploy) == before
    (failure,) = refused.failures
    assert f"{DEV} is {size} bytes, more than the {size - 1} bytes" in failure.message
    assert "limits.values_file_bytes" in failure.message

    allowed = cycle(tmp_path, proxy, deploy, LimitSettings(values_file_bytes=size + 200))
    assert [c.digest for c in allowed.changes] == [real]
