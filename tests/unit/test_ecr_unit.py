"""Unit tests of the ECR adapter: pure parts, and AWS answers that moto cannot produce.

AWS answers come from botocore's Stubber on a real botocore client, so request building,
response parsing and event hooks are botocore's own; nothing goes over the network except
the one connection-refused test on a closed loopback port.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.stub import Stubber
from prometheus_client import CollectorRegistry

from image_updater.errors import (
    ConfigError,
    DigestMismatchError,
    ImmutableTagError,
    InvalidReferenceError,
    RegistryAuthError,
    TransientRegistryError,
)
from image_updater.observability.metrics import Metrics
from image_updater.registry.base import MANIFEST_ACCEPT, OCI_MANIFEST, Manifest
from image_updater.registry.ecr import (
    EcrHost,
    EcrRegistry,
    parse_ecr_host,
)
from image_updater.registry.ecr_session import EcrOptions
from image_updater.registry.ratelimit import RateLimiter
from tests.fixtures.moto import ACCESS_KEY, ACCOUNT, ECR_HOST, SECRET_KEY, fake_session
from tests.fixtures.registry import free_port

REPO = "team/app"
ARGS = {"repositoryName": REPO, "registryId": ACCOUNT}
PUSHED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


# -- host names ------------------------------------------------------------------------------

HOSTS = [
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com",
     EcrHost(account="123456789012", region="eu-west-1")),
    ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
     EcrHost(account="123456789012", region="cn-north-1", china=True)),
    ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
     EcrHost(account="123456789012", region="us-gov-west-1", fips=True)),
    ("123456789012.DKR.ECR.us-east-1.AMAZONAWS.COM",
     EcrHost(account="123456789012", region="us-east-1")),
    ("123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.io", None),
    ("123456789012.dkr.ecr.us-east-1.amazonaws.com:443", None),
    ("12345678901.dkr.ecr.us-east-1.amazonaws.com", None),     # 11 digits
    ("123456789012.dkr.ecr.amazonaws.com", None),               # no region
    ("public.ecr.aws", None),
    ("registry.example.com", None),
    ("", None),
]


@pytest.mark.parametrize(("host", "expected"), HOSTS)
def test_parse_ecr_host(host: str, expected: EcrHost | None) -> None:
    assert parse_ecr_host(host) == expected


@pytest.mark.parametrize(("host", "partition"), [
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "aws"),
    ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", "aws-cn"),
    ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", "aws-us-gov"),
])
def test_host_round_trips_and_names_the_partition(host: str, partition: str) -> None:
    parsed = parse_ecr_host(host)
    assert parsed is not None and parsed.host == host and parsed.partition == partition
    assert parsed.repository_arn("a/b") == \
        f"arn:{partition}:ecr:{parsed.region}:123456789012:repository/a/b"


def test_importing_the_adapter_does_not_import_boto3() -> None:
    code = ("import sys, image_updater.registry.ecr as e; "
            "assert e.parse_ecr_host('123456789012.dkr.ecr.eu-west-1.amazonaws.com'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


# -- options ---------------------------------------------------------------------------------

def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        EcrOptions("eu-west-1")  # type: ignore[misc]


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"region": "Europe"}, "region 'Europe'"),
    ({"account": "1234"}, "12-digit"),
    ({"role_arn": "image-updater"}, "role_arn"),
    ({"role_session_name": "x"}, "role_session_name"),
    ({"endpoint_url": "localhost:4566"}, "endpoint_url must be an http(s) URL"),
    ({"endpoint_url": "https://user:pw@vpce.example"}, "must not contain user information"),
    ({"max_concurrency": 0}, "max_concurrency"),
    ({"requests_per_second": 0}, "requests_per_second"),
    ({"max_attempts": 0}, "max_attempts"),
])
def test_bad_options_are_config_errors(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        EcrOptions(**kwargs)
    assert fragment in str(caught.value)
    assert "pw@" not in str(caught.value)


def test_non_ecr_host_needs_a_region() -> None:
    with pytest.raises(ConfigError, match="must set region"):
        EcrRegistry("registry.example.com", session=fake_session())


# -- stubbed registry ------------------------------------------------------------------------

@pytest.fixture
def client() -> Iterator[Any]:
    # The endpoint is a closed loopback port: an unstubbed call could never leave the host.
    c = fake_session().client("ecr", endpoint_url=f"http://127.0.0.1:{free_port()}")
    yield c
    c.close()


@pytest.fixture
def stub(client: Any) -> Iterator[Stubber]:
    with Stubber(client) as s:
        yield s
        s.assert_no_pending_responses()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def reg(client: Any, metrics: Metrics) -> EcrRegistry:
    return EcrRegistry(ECR_HOST, client=client, metrics=metrics)


def requests(metrics: Metrics, method: str, status: str) -> float | None:
    return metrics.registry.get_sample_value(
        "image_updater_registry_requests_total",
        {"registry": ECR_HOST, "method": method, "status": status})


def detail(tags: list[str], seed: str) -> dict[str, Any]:
    return {"registryId": ACCOUNT, "repositoryName": REPO, "imageDigest": digest(seed),
            "imageTags": tags, "imagePushedAt": PUSHED}


def test_scan_follows_every_page(reg: EcrRegistry, stub: Stubber, metrics: Metrics) -> None:
    pages = [([detail(["dev"], "a"), detail([], "untagged")], "t1"),
             ([detail(["staging", "1.2.0"], "b")], "t2"),
             ([detail(["prod"], "c")], None)]
    token = None
    for details, next_token in pages:
        response: dict[str, Any] = {"imageDetails": details}
        if next_token:
            response["nextToken"] = next_token
        stub.add_response("describe_images", response,
                          {**ARGS, **({"nextToken": token} if token else {})})
        token = next_token
    scan = asyncio.run(reg.scan(REPO))
    assert {t: d.digest for t, d in scan.items()} == {
        "dev": digest("a"), "staging": digest("b"), "1.2.0": digest("b"), "prod": digest("c")}
    assert scan["prod"].created == PUSHED
    assert requests(metrics, "DescribeImages", "200") == 3


def test_malformed_registry_entries_are_skipped(reg: EcrRegistry, stub: Stubber) -> None:
    bad_digest = {**detail(["dev"], "a"), "imageDigest": "sha256:../../etc"}
    stub.add_response("describe_images", {"imageDetails": [
        bad_digest, detail(["-bad", "staging"], "b")]}, ARGS)
    assert asyncio.run(reg.list_tags(REPO)) == ["staging"]


@pytest.mark.parametrize("tag", ["../x", "a" * 129, "-x", ""])
def test_invalid_tags_are_refused_before_any_call(reg: EcrRegistry, stub: Stubber,
                                                  tag: str) -> None:
    with pytest.raises(InvalidReferenceError):
        asyncio.run(reg.digests(REPO, [tag]))


def test_invalid_repository_names_are_refused(reg: EcrRegistry, stub: Stubber) -> None:
    with pytest.raises(InvalidReferenceError, match="repository name"):
        asyncio.run(reg.scan("Team/App"))


def test_bad_credentials_are_an_auth_error_without_secrets(
        reg: EcrRegistry, stub: Stubber, metrics: Metrics) -> None:
    stub.add_client_error("describe_images", service_error_code="UnrecognizedClientException",
                          service_message=f"The security token {ACCESS_KEY} is invalid.",
                          http_status_code=403)
    with pytest.raises(RegistryAuthError) as caught:
        asyncio.run(reg.scan(REPO))
    text = str(caught.value)
    assert ECR_HOST in text and "ecr:DescribeImages" in text and "credential" in text
    assert SECRET_KEY not in text and ACCESS_KEY not in text
    assert caught.value.registry == ECR_HOST
    assert requests(metrics, "DescribeImages", "403") == 1


def test_access_denied_names_the_iam_action_and_resource(reg: EcrRegistry,
                                                          stub: Stubber) -> None:
    stub.add_client_error("batch_get_image", service_error_code="AccessDeniedException",
                          http_status_code=400)
    with pytest.raises(RegistryAuthError) as caught:
        asyncio.run(reg.get_manifest(REPO, "dev"))
    text = str(caught.value)
    assert "ecr:BatchGetImage" in text
    assert f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{REPO}" in text


def test_throttling_is_transient_and_counted_as_429(reg: EcrRegistry, stub: Stubber,
                                                    metrics: Metrics) -> None:
    stub.add_client_error("describe_images", service_error_code="ThrottlingException",
                          http_status_code=400)
    with pytest.raises(TransientRegistryError) as caught:
        asyncio.run(reg.scan(REPO))
    assert caught.value.temporary and "next cycle will retry" in str(caught.value)
    assert requests(metrics, "DescribeImages", "429") == 1


def manifest(seed: str) -> Manifest:
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "seed": seed}).encode()
    return Manifest(media_type=OCI_MANIFEST, digest="sha256:" + hashlib.sha256(body).hexdigest(),
                    body=body)


def image(m: Manifest, *, digest_: str | None = None) -> dict[str, Any]:
    return {"registryId": ACCOUNT, "repositoryName": REPO,
            "imageId": {"imageDigest": digest_ or m.digest, "imageTag": "dev"},
            "imageManifest": m.body.decode(), "imageManifestMediaType": m.media_type}


def test_get_manifest_asks_for_every_media_type_and_checks_the_digest(
        reg: EcrRegistry, stub: Stubber) -> None:
    m = manifest("a")
    params = {**ARGS, "imageIds": [{"imageTag": "dev"}],
              "acceptedMediaTypes": list(MANIFEST_ACCEPT)}
    stub.add_response("batch_get_image", {"images": [image(m)], "failures": []}, params)
    stub.add_response("batch_get_image", {"images": [image(m, digest_=digest("x"))],
                                          "failures": []}, params)

    async def go() -> Manifest:
        got = await reg.get_manifest(REPO, "dev")
        with pytest.raises(DigestMismatchError):
            await reg.get_manifest(REPO, "dev")
        return got

    assert asyncio.run(go()) == m


def test_upstream_failure_of_batch_get_image_is_transient(reg: EcrRegistry,
                                                          stub: Stubber) -> None:
    stub.add_response("batch_get_image", {"images": [], "failures": [{
        "imageId": {"imageTag": "dev"}, "failureCode": "UpstreamUnavailable",
        "failureReason": "upstream registry down"}]})
    with pytest.raises(TransientRegistryError, match="UpstreamUnavailable"):
        asyncio.run(reg.get_manifest(REPO, "dev"))


def test_immutable_tag_answer_of_real_ecr_becomes_immutable_tag_error(
        reg: EcrRegistry, stub: Stubber) -> None:
    new, old = manifest("new"), manifest("old")
    stub.add_client_error("put_image", service_error_code="ImageTagAlreadyExistsException",
                          http_status_code=400, expected_params={
                              **ARGS, "imageManifest": new.body.decode(), "imageTag": "prod",
                              "imageManifestMediaType": OCI_MANIFEST,
                              "imageDigest": new.digest})
    stub.add_response("describe_images", {"imageDetails": [{
        "imageDigest": old.digest, "imageTags": ["prod"],
        "imageManifestMediaType": OCI_MANIFEST}]}, {**ARGS, "imageIds": [{"imageTag": "prod"}]})
    with pytest.raises(ImmutableTagError) as caught:
        asyncio.run(reg.put_manifest(REPO, "prod", new))
    text = str(caught.value)
    assert old.digest in text and new.digest in text and "tag immutability" in text


def test_put_manifest_refuses_a_body_that_does_not_match_its_digest(
        reg: EcrRegistry, stub: Stubber) -> None:
    forged = Manifest(media_type=OCI_MANIFEST, digest=digest("other"), body=b"{}")
    with pytest.raises(DigestMismatchError, match="nothing was pushed"):
        asyncio.run(reg.put_manifest(REPO, "prod", forged))


def test_unreachable_endpoint_is_transient(metrics: Metrics) -> None:
    port = free_port()  # bound then released: nothing listens there
    reg = EcrRegistry(ECR_HOST, session=fake_session(), metrics=metrics, options=EcrOptions(
        endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1))
    with pytest.raises(TransientRegistryError, match="Could not reach the ECR API"):
        asyncio.run(reg.scan(REPO))
    assert requests(metrics, "DescribeImages", "error") == 1


# -- rate cap --------------------------------------------------------------------------------

def test_rate_limiter_spaces_calls_without_real_sleeping() -> None:
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    limiter = RateLimiter(requests_per_second=4, burst=1, clock=lambda: now[0], sleep=sleep)

    async def go() -> None:
        for _ in range(3):
            await limiter.acquire()

    asyncio.run(go())
    assert slept == [0.25, 0.5]  # the first call is free, the next ones queue 1/4 s apart
    now[0] = 200.0
    asyncio.run(go())
    assert slept[2:] == [0.25, 0.5]  # after a pause the bucket is full again
