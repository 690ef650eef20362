"""Building the boto3 ECR client for one registry: its options, region, account and role.

boto3 and botocore are imported inside the functions here, never at module level: short-lived
``retag`` jobs for plain OCI registries import :mod:`image_updater.registry.ecr` (for
:func:`parse_ecr_host`) but never pay for boto3.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from image_updater.errors import ConfigError, RegistryAuthError
from image_updater.registry.ecr_host import EcrHost, parse_ecr_host

_REGION_RE = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]+")
_ACCOUNT_RE = re.compile(r"[0-9]{12}")
_ROLE_ARN_RE = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}")
_SESSION_NAME_RE = re.compile(r"[\w+=,.@-]{2,64}")


@dataclass(frozen=True, kw_only=True)
class EcrOptions:
    """How to reach one ECR registry. Defaults suit a daemon running inside AWS."""

    region: str | None = None
    """AWS region of the registry API. Default: the region in the registry host name."""
    account: str | None = None
    """12-digit account id sent as ``registryId``. Default: the account in the host name."""
    role_arn: str | None = None
    """IAM role to assume (via STS) for all ECR calls; credentials refresh automatically.
    Default: use the identity of the default credential chain directly."""
    role_session_name: str = "image-updater"
    """Session name of the assumed role, visible in CloudTrail."""
    external_id: str | None = field(default=None, repr=False)
    """External id required by the role's trust policy, if any. Never logged."""
    endpoint_url: str | None = None
    """ECR API endpoint override: a VPC interface endpoint, or a test server.
    Default: the public regional (or FIPS) endpoint."""
    sts_endpoint_url: str | None = None
    """STS endpoint override for ``role_arn`` (VPC endpoint or test server)."""
    max_concurrency: int = 8
    """ECR API calls in flight at once for this registry (worker threads used)."""
    requests_per_second: float | None = None
    """Client-side cap on ECR API calls per second. Default: none beyond adaptive retries."""
    max_attempts: int = 5
    """Attempts per call in botocore's adaptive retry mode, including the first."""

    def __post_init__(self) -> None:
        for problem in self._problems():
            raise ConfigError(f"ECR options: {problem}")

    def _problems(self) -> Iterator[str]:
        if self.region is not None and not _REGION_RE.fullmatch(self.region):
            yield f"region {self.region!r} is not an AWS region name such as 'eu-west-1'."
        if self.account is not None and not _ACCOUNT_RE.fullmatch(self.account):
            yield f"account {self.account!r} must be the 12-digit AWS account id."
        if self.role_arn is not None and not _ROLE_ARN_RE.fullmatch(self.role_arn):
            yield (f"role_arn {self.role_arn!r} is not an IAM role ARN such as "
                   "'arn:aws:iam::123456789012:role/image-updater'.")
        if not _SESSION_NAME_RE.fullmatch(self.role_session_name):
            yield "role_session_name must be 2-64 characters of letters, digits and +=,.@_-."
        for name in ("endpoint_url", "sts_endpoint_url"):
            yield from _url_problems(name, getattr(self, name))
        if self.max_concurrency < 1:
            yield f"max_concurrency must be at least 1, not {self.max_concurrency}."
        if self.requests_per_second is not None and not self.requests_per_second > 0:
            yield f"requests_per_second must be positive, not {self.requests_per_second}."
        if self.max_attempts < 1:
            yield f"max_attempts must be at least 1, not {self.max_attempts}."


def _url_problems(name: str, url: str | None) -> Iterator[str]:
    if url is None:
        return
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https") or not rest:
        yield f"{name} must be an http(s) URL."
    elif "@" in rest.split("/", 1)[0]:
        # Credentials in a URL end up in logs and process listings; refuse them outright.
        yield f"{name} must not contain user information; use the AWS credential chain."


def _location(host: str, opts: EcrOptions) -> EcrHost:
    """Account and region: the options win, else the host name tells."""
    parsed = parse_ecr_host(host)
    region = opts.region or (parsed.region if parsed else None)
    if region is None:
        raise ConfigError(
            f"Registry {host!r} is not an ECR host name (<account>.dkr.ecr.<region>."
            "amazonaws.com), so its ECR options must set region (and account).")
    return EcrHost(account=opts.account or (parsed.account if parsed else ""), region=region,
                   fips=bool(parsed and parsed.fips), china=bool(parsed and parsed.china))


def _make_client(session: Any, opts: EcrOptions, where: EcrHost) -> Any:
    import boto3  # lazily: see the module docstring
    from botocore.config import Config

    base = session if session is not None else boto3.Session(region_name=where.region)
    config = Config(
        region_name=where.region,
        retries={"mode": "adaptive", "max_attempts": opts.max_attempts},
        use_fips_endpoint=where.fips or None,
        max_pool_connections=max(10, opts.max_concurrency),
    )
    if opts.role_arn:
        base = _assumed_role_session(base, opts, where.region)
    return base.client("ecr", region_name=where.region, endpoint_url=opts.endpoint_url,
                       config=config)


def _assumed_role_session(base: Any, opts: EcrOptions, region: str) -> Any:
    """A boto3 session whose credentials come from ``sts:AssumeRole``, refreshed by botocore.

    The first AssumeRole happens on the first ECR call (deferred), not here, so building a
    registry does no I/O.
    """
    import boto3
    import botocore.session
    from botocore.credentials import (
        AssumeRoleCredentialFetcher,
        CredentialProvider,
        CredentialResolver,
        DeferredRefreshableCredentials,
    )

    extra: dict[str, str] = {"RoleSessionName": opts.role_session_name}
    if opts.external_id:
        extra["ExternalId"] = opts.external_id
    source = base.get_credentials()
    if source is None:
        raise RegistryAuthError(
            f"No AWS credentials were found to assume {opts.role_arn}; provide them through "
            "the default chain (environment, profile, web identity, instance role).")
    fetcher = AssumeRoleCredentialFetcher(
        client_creator=partial(base.client, region_name=region,
                               endpoint_url=opts.sts_endpoint_url),
        source_credentials=source, role_arn=opts.role_arn, extra_args=extra)
    credentials = DeferredRefreshableCredentials(
        refresh_using=fetcher.fetch_credentials, method="assume-role")

    class _AssumedRole(CredentialProvider):
        METHOD = "assume-role"

        def load(self) -> Any:
            return credentials

    assumed = botocore.session.Session()
    assumed.register_component("credential_provider", CredentialResolver([_AssumedRole()]))
    return boto3.Session(botocore_session=assumed, region_name=region)
