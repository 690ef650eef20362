"""Recognising an Amazon ECR private registry by its host name. Pure: no boto3 here.

The router calls :func:`parse_ecr_host` for every configured image, including in short-lived
``retag`` jobs for plain OCI registries, so this module must stay cheap to import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# <account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]. The account is always 12 digits and
# regions look like "us-east-1", "eu-central-2", "us-gov-west-1", "cn-north-1".
_ECR_HOST_RE = re.compile(
    r"(?P<account>[0-9]{12})\.dkr\.ecr(?P<fips>-fips)?\."
    r"(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]+)\.amazonaws\.com(?P<china>\.cn)?"
)


@dataclass(frozen=True)
class EcrHost:
    """The parts of an ECR registry host name."""

    account: str
    """The 12-digit AWS account id that owns the registry (ECR's ``registryId``)."""
    region: str
    """The AWS region of the registry, e.g. ``eu-west-1``."""
    fips: bool = False
    """True for ``dkr.ecr-fips`` hosts: API calls must then use the FIPS endpoint too."""
    china: bool = False
    """True for ``.amazonaws.com.cn`` hosts (the ``aws-cn`` partition)."""

    @property
    def partition(self) -> str:
        """The ARN partition, needed to name repositories in IAM policies and messages."""
        if self.china:
            return "aws-cn"
        if self.region.startswith("us-gov-"):
            return "aws-us-gov"
        return "aws"

    @property
    def host(self) -> str:
        ecr = "ecr-fips" if self.fips else "ecr"
        suffix = "amazonaws.com.cn" if self.china else "amazonaws.com"
        return f"{self.account}.dkr.{ecr}.{self.region}.{suffix}"

    def repository_arn(self, repository: str) -> str:
        return f"arn:{self.partition}:ecr:{self.region}:{self.account}:repository/{repository}"


def parse_ecr_host(host: str) -> EcrHost | None:
    """Return the account, region and flags of an ECR host name, or None for other registries.

    Host names are case-insensitive; a port or any extra label (``….amazonaws.com.evil.io``)
    means the host is not ECR.
    """
    if not isinstance(host, str):
        return None
    match = _ECR_HOST_RE.fullmatch(host.strip().lower())
    if match is None:
        return None
    return EcrHost(
        account=match["account"],
        region=match["region"],
        fips=match["fips"] is not None,
        china=match["china"] is not None,
    )
