"""Turning botocore's exceptions into ours, with messages that say what to do next.

botocore is imported lazily (inside functions) so that importing the ECR adapter stays cheap.
AWS error messages are quoted only through :func:`errors.truncate`, and never for
authentication failures: those can echo principal names, and the error code says enough.
"""

from __future__ import annotations

from dataclasses import dataclass

from image_updater.errors import (
    ConfigError,
    ImageUpdaterError,
    NotFoundError,
    RegistryAuthError,
    RegistryError,
    TransientRegistryError,
    truncate,
)

#: ECR answers HTTP 400 with these codes when it throttles; we count them as status "429".
THROTTLING_CODES = frozenset({
    "ThrottlingException", "TooManyRequestsException", "Throttling", "ThrottledException",
    "RequestLimitExceeded",
})
#: the credentials themselves were refused (unknown key, bad signature)
_BAD_CREDENTIAL_CODES = frozenset({
    "UnrecognizedClientException", "InvalidSignatureException", "InvalidClientTokenId",
    "SignatureDoesNotMatch", "MissingAuthenticationTokenException", "IncompleteSignature",
})


@dataclass(frozen=True)
class Target:
    """What one ECR call concerned, for error messages."""

    host: str
    operation: str        # the API operation, e.g. "DescribeImages" (IAM action ecr:<operation>)
    subject: str          # e.g. "repository 'team/app'" or "image 'team/app:prod'"
    resource_arn: str     # the IAM resource the action needs, or "*"
    max_attempts: int = 1  # how many attempts botocore made before giving up


def is_aws_error(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, BotoCoreError | ClientError)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError (``""`` for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def translate(exc: BaseException, target: Target) -> ImageUpdaterError:
    """Our exception for a botocore exception raised while calling ``target.operation``."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return _client_error(exc, target)
    return _botocore_error(exc, target)


def _client_error(exc: BaseException, t: Target) -> ImageUpdaterError:
    code = error_code(exc)
    # A refresh of assumed-role credentials fails inside the ECR call with an STS error.
    if getattr(exc, "operation_name", t.operation) == "AssumeRole":
        return RegistryAuthError(
            f"Assuming the configured role failed ({code}) while calling ecr:{t.operation} on "
            f"registry {t.host}; allow sts:AssumeRole on that role for the source identity and "
            "check role_arn and external_id. The next cycle will retry.",
            registry=t.host, url=t.resource_arn)
    if code in THROTTLING_CODES:
        return TransientRegistryError(
            f"ECR throttled ecr:{t.operation} for {t.subject} in registry {t.host} ({code}) "
            f"after {t.max_attempts} attempts with adaptive backoff; the next cycle will retry. "
            "Lower requests_per_second or max_concurrency if this keeps happening.",
            registry=t.host, url=t.resource_arn)
    auth = _auth_error(code, t)
    if auth is not None:
        return auth
    if code == "RepositoryNotFoundException":
        return NotFoundError(
            f"ECR repository {t.resource_arn} does not exist (needed for {t.subject} in registry "
            f"{t.host}); create the repository or fix the image name in the policy.",
            registry=t.host, url=t.resource_arn)
    if code == "ImageNotFoundException":
        return NotFoundError(
            f"{t.subject[:1].upper()}{t.subject[1:]} was not found in ECR registry {t.host}; "
            "push it, or fix the tag or digest in the policy.",
            registry=t.host, url=t.resource_arn)
    return _other_client_error(exc, code, t)


def _auth_error(code: str, t: Target) -> RegistryAuthError | None:
    if code in _BAD_CREDENTIAL_CODES:
        text = (f"AWS did not accept the credentials used to call ecr:{t.operation} on registry "
                f"{t.host} ({code}); check the default credential chain (environment, profile, "
                "web identity, instance role) or role_arn. The next cycle will retry.")
    elif code.startswith("ExpiredToken"):
        text = (f"The AWS credentials used to call ecr:{t.operation} on registry {t.host} have "
                f"expired ({code}); renew them, or set role_arn so they refresh automatically.")
    elif code.startswith("AccessDenied") or code == "UnauthorizedOperation":
        text = (f"The AWS identity of image-updater may not call ecr:{t.operation} on "
                f"{t.resource_arn} ({code}); grant that IAM action on that resource "
                "(docs/ecr.md has least-privilege policies).")
    else:
        return None
    return RegistryAuthError(text, registry=t.host, url=t.resource_arn)


def _other_client_error(exc: BaseException, code: str, t: Target) -> RegistryError:
    response = getattr(exc, "response", {}) or {}
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    detail = truncate(str(response.get("Error", {}).get("Message", "")))
    if status >= 500 or code in ("ServerException", "ServiceUnavailableException"):
        return TransientRegistryError(
            f"ECR failed ecr:{t.operation} for {t.subject} in registry {t.host} with a server "
            f"error ({code}: {detail}); the next cycle will retry.",
            registry=t.host, url=t.resource_arn)
    return RegistryError(
        f"ECR refused ecr:{t.operation} for {t.subject} in registry {t.host} ({code}: "
        f"{detail}); this will not succeed on retry until the request or the repository "
        "settings change.",
        registry=t.host, url=t.resource_arn)


def _botocore_error(exc: BaseException, t: Target) -> ImageUpdaterError:
    from botocore import exceptions as bx

    kind = type(exc).__name__
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError
                  | bx.CredentialRetrievalError):
        return RegistryAuthError(
            f"No usable AWS credentials were found for ECR registry {t.host} ({kind}); provide "
            "them through the default chain (environment, profile, web identity, instance "
            "role). The next cycle will retry.",
            registry=t.host, url=t.resource_arn)
    if isinstance(exc, bx.NoRegionError):
        return ConfigError(
            f"No AWS region is known for ECR registry {t.host}; set region in its ECR options.")
    if isinstance(exc, bx.HTTPClientError | bx.ConnectionError):
        return TransientRegistryError(
            f"Could not reach the ECR API for {t.subject} in registry {t.host} ({kind}); "
            "the next cycle will retry.",
            registry=t.host, url=t.resource_arn)
    # Anything else (parameter validation, unknown service) is a bug or a bad option.
    return RegistryError(
        f"Calling ecr:{t.operation} for {t.subject} in registry {t.host} failed before reaching "
        f"AWS ({kind}: {truncate(str(exc))}); check the ECR options of this registry.",
        registry=t.host, url=t.resource_arn)
