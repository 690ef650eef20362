"""EcrRegistry against moto's SERVER mode on 127.0.0.1 (real HTTP, real botocore).

Inputs are created with a plain boto3 client, never with the code under test. moto computes
digests differently from ECR, so every put_image here passes ``imageDigest`` explicitly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from image_updater.errors import ConfigError, ImmutableTagError, NotFoundError
from image_updater.observability.metrics import Metrics
from image_updater.registry.base import OCI_MANIFEST, Manifest
from image_updater.registry.copy import copy_image
from image_updater.registry.ecr import EcrRegistry
from image_updater.registry.ecr_session import EcrOptions
from tests.fixtures.moto import ACCOUNT, ECR_HOST, SECRET_KEY, MotoServer, fake_session

pytestmark = pytest.mark.integration

ENVS = ("dev", "staging", "prod")


def manifest_body(seed: str) -> bytes:
    """A small OCI image manifest; ``seed`` makes distinct ones."""
    layer = "sha256:" + hashlib.sha256(f"layer {seed}".encode()).hexdigest()
    config = "sha256:" + hashlib.sha256(f"config {seed}".encode()).hexdigest()
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": 100},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer, "size": 200}],
    }, sort_keys=True).encode()


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


@pytest.fixture
def ecr_client(moto_server: MotoServer) -> Iterator[Any]:
    """A plain boto3 ECR client for creating test inputs."""
    client = fake_session().client("ecr", endpoint_url=moto_server.url)
    yield client
    client.close()


@pytest.fixture
def repo(ecr_client: Any) -> str:
    """A fresh repository with one image per environment tag."""
    name = f"team/app-{uuid.uuid4().hex[:8]}"
    ecr_client.create_repository(repositoryName=name)
    for env in ENVS:
        push(ecr_client, name, env, seed=f"{name}-{env}")
    return name


def push(client: Any, repository: str, tag: str, *, seed: str) -> str:
    body = manifest_body(seed)
    digest = digest_of(body)
    client.put_image(repositoryName=repository, imageManifest=body.decode(), imageTag=tag,
                     imageManifestMediaType=OCI_MANIFEST, imageDigest=digest)
    return digest


def make_registry(moto_server: MotoServer, *, session: Any = None,
                  metrics: Metrics | None = None, **options: Any) -> EcrRegistry:
    opts = EcrOptions(endpoint_url=moto_server.url, **options)
    return EcrRegistry(ECR_HOST, options=opts, session=session or fake_session(),
                       metrics=metrics)


def count_calls(session: Any, operation: str) -> list[str]:
    """Record every ``operation`` request made by clients later created from ``session``."""
    calls: list[str] = []
    session.events.register(f"before-call.{operation}", lambda **kw: calls.append("call"))
    return calls


def test_scan_returns_the_digest_behind_each_environment_tag(
        moto_server: MotoServer, repo: str) -> None:
    reg = make_registry(moto_server)

    async def go() -> tuple[dict[str, Any], dict[str, str], list[str]]:
        return (await reg.scan(repo), await reg.digests(repo, ["dev", "prod", "missing"]),
                await reg.list_tags(repo))

    scan, digests, tags = asyncio.run(go())
    expected = {env: digest_of(manifest_body(f"{repo}-{env}")) for env in ENVS}
    assert {tag: td.digest for tag, td in scan.items()} == expected
    assert all(isinstance(td.created, datetime) for td in scan.values())
    assert digests == {"dev": expected["dev"], "prod": expected["prod"]}
    assert tags == sorted(ENVS)


def test_created_is_the_push_time_from_the_listing(moto_server: MotoServer, repo: str) -> None:
    reg = make_registry(moto_server)
    digest = digest_of(manifest_body(f"{repo}-dev"))
    created = asyncio.run(reg.created(repo, digest))
    assert isinstance(created, datetime) and created.tzinfo is not None


def test_retag_copies_the_manifest_and_keeps_the_digest(
        moto_server: MotoServer, repo: str) -> None:
    reg = make_registry(moto_server)

    async def go() -> tuple[Manifest, str, dict[str, str], tuple[str, str] | None]:
        manifest = await reg.get_manifest(repo, "staging")
        pushed = await reg.put_manifest(repo, "prod", manifest)
        return manifest, pushed, await reg.digests(repo, ["prod"]), \
            await reg.head_manifest(repo, "prod")

    manifest, pushed, digests, head = asyncio.run(go())
    staging = digest_of(manifest_body(f"{repo}-staging"))
    assert manifest.digest == staging and manifest.media_type == OCI_MANIFEST
    assert manifest.body == manifest_body(f"{repo}-staging")
    assert pushed == staging
    assert digests == {"prod": staging}  # put_manifest invalidated the cycle's listing
    assert head == (staging, OCI_MANIFEST)


def test_copy_into_another_ecr_repository_is_refused_with_what_to_do_instead(
        moto_server: MotoServer, repo: str, ecr_client: Any) -> None:
    # ECR's API cannot upload blobs, and the OCI API of ECR is not used: docs/ecr.md says so.
    other = f"{repo}-copy"
    ecr_client.create_repository(repositoryName=other)
    reg = make_registry(moto_server)

    async def go() -> str:
        manifest = await reg.get_manifest(repo, "staging")
        return await copy_image(manifest, src=reg, src_repository=repo, dst=reg,
                                dst_repository=other, tag="prod")

    with pytest.raises(ConfigError) as caught:
        asyncio.run(go())
    assert "needs blob uploads" in str(caught.value)
    assert "skopeo copy --all" in str(caught.value)
    assert ecr_client.describe_images(repositoryName=other)["imageDetails"] == []


def test_pushing_the_same_digest_under_the_same_tag_again_succeeds(
        moto_server: MotoServer, repo: str) -> None:
    reg = make_registry(moto_server)

    async def go() -> tuple[str, str]:
        manifest = await reg.get_manifest(repo, "dev")
        return manifest.digest, await reg.put_manifest(repo, "dev", manifest)

    digest, again = asyncio.run(go())
    assert again == digest


def test_immutable_repository_refuses_to_move_a_tag(
        moto_server: MotoServer, ecr_client: Any) -> None:
    name = f"team/locked-{uuid.uuid4().hex[:8]}"
    ecr_client.create_repository(repositoryName=name, imageTagMutability="IMMUTABLE")
    old = push(ecr_client, name, "prod", seed="old")
    push(ecr_client, name, "candidate", seed="new")
    reg = make_registry(moto_server)

    async def go() -> tuple[ImmutableTagError, dict[str, str]]:
        manifest = await reg.get_manifest(name, "candidate")
        with pytest.raises(ImmutableTagError) as caught:
            await reg.put_manifest(name, "prod", manifest)
        return caught.value, await reg.digests(name, ["prod"])

    error, after = asyncio.run(go())
    text = str(error)
    assert "immutability" in text and "'prod'" in text and old in text
    assert "MUTABLE" in text and name in text  # says how to fix it, names the repository
    assert after == {"prod": old}


def test_missing_repository_is_not_found_with_a_clear_message(moto_server: MotoServer) -> None:
    reg = make_registry(moto_server)

    async def go() -> NotFoundError:
        with pytest.raises(NotFoundError):
            await reg.get_manifest("team/does-not-exist", "dev")
        with pytest.raises(NotFoundError) as caught:
            await reg.scan("team/does-not-exist")
        return caught.value

    error = asyncio.run(go())
    text = str(error)
    assert "team/does-not-exist" in text and "does not exist" in text
    assert "create the repository" in text
    assert error.registry == ECR_HOST


def test_missing_tag_is_not_found_and_head_says_none(moto_server: MotoServer, repo: str) -> None:
    reg = make_registry(moto_server)

    async def go() -> tuple[str, tuple[str, str] | None, dict[str, str]]:
        with pytest.raises(NotFoundError) as caught:
            await reg.get_manifest(repo, "qa")
        return str(caught.value), await reg.head_manifest(repo, "qa"), \
            await reg.digests(repo, ["qa"])

    text, head, digests = asyncio.run(go())
    assert f"'{repo}:qa'" in text and "push it" in text
    assert head is None
    assert digests == {}


def test_many_apps_sharing_a_repository_cost_one_listing_per_cycle(
        moto_server: MotoServer, repo: str) -> None:
    def pages_for(apps: int) -> int:
        session = fake_session()
        calls = count_calls(session, "ecr.DescribeImages")
        reg = make_registry(moto_server, session=session)

        async def two_cycles() -> None:
            for _ in range(2):  # a second cycle lists again: the cache is per cycle
                reg.begin_cycle()
                # every app asks for its own environments, all at once, as the engine does
                await asyncio.gather(*(reg.digests(repo, [env])
                                       for _ in range(apps) for env in ENVS))

        asyncio.run(two_cycles())
        return len(calls)

    assert pages_for(1) == pages_for(20) == 2


def test_requests_are_counted_in_metrics(moto_server: MotoServer, repo: str) -> None:
    metrics = Metrics(CollectorRegistry())
    reg = make_registry(moto_server, metrics=metrics)

    async def go() -> None:
        await reg.scan(repo)
        await reg.get_manifest(repo, "dev")

    asyncio.run(go())
    value = metrics.registry.get_sample_value
    labels = {"registry": ECR_HOST, "status": "200"}
    assert value("image_updater_registry_requests_total",
                 {**labels, "method": "DescribeImages"}) == 1
    assert value("image_updater_registry_requests_total",
                 {**labels, "method": "BatchGetImage"}) == 1


def test_assume_role_credentials_are_used_and_fetched_once(
        moto_server: MotoServer, repo: str) -> None:
    session = fake_session()
    assume_calls = count_calls(session, "sts.AssumeRole")
    reg = make_registry(
        moto_server, session=session, sts_endpoint_url=moto_server.url,
        role_arn=f"arn:aws:iam::{ACCOUNT}:role/image-updater", external_id="ext-123")
    assert assume_calls == []  # deferred: building the registry does no I/O

    async def go() -> dict[str, str]:
        await reg.scan(repo)
        reg.begin_cycle()
        return await reg.digests(repo, ["dev"])

    assert asyncio.run(go()) == {"dev": digest_of(manifest_body(f"{repo}-dev"))}
    assert len(assume_calls) == 1  # refreshed only near expiry, not per call
    assert SECRET_KEY not in repr(reg.options) and "ext-123" not in repr(reg.options)
