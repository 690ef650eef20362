"""Build the right registry adapter for a host from settings.

ECR hosts get the boto3 provider; everything else the OCI client. boto3 is imported only
when an ECR host is actually used, so short-lived ``retag`` jobs stay fast to start.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from image_updater.config.settings import (
    CredentialsSettings,
    EcrSettings,
    RegistrySettings,
    Settings,
)
from image_updater.errors import ConfigError
from image_updater.registry.base import Registry
from image_updater.registry.credentials import (
    Anonymous,
    CredentialSource,
    DockerConfigCredentials,
    EnvCredentials,
    FileCredentials,
)
from image_updater.registry.ecr_host import parse_ecr_host
from image_updater.registry.oci import OciRegistry, OnRequest
from image_updater.registry.options import RegistryOptions
from image_updater.secrets import SecretRegistry

if TYPE_CHECKING:
    from image_updater.observability.metrics import Metrics


def open_registry(settings: RegistrySettings, *, secrets: SecretRegistry,
                  metrics: Metrics | None = None,
                  on_request: OnRequest | None = None) -> Registry:
    """``on_request(method, url)`` sees every OCI request (ECR: use metrics instead).

    Every credential the registry's source reads is added to ``secrets``. ECR uses boto3's
    credential chain, which image-updater never reads itself.
    """
    if settings.ecr is not None or parse_ecr_host(settings.host) is not None:
        return open_ecr(settings, metrics=metrics)
    return open_oci(settings, secrets=secrets, metrics=metrics, on_request=on_request)


def open_oci(settings: RegistrySettings, *, secrets: SecretRegistry,
             metrics: Metrics | None = None,
             on_request: OnRequest | None = None) -> OciRegistry:
    """The OCI API client, with the credentials ``settings`` name."""
    options = RegistryOptions(
        host=settings.host, insecure=settings.insecure,
        ca_file=Path(settings.ca_file) if settings.ca_file else None,
        credentials=credential_source(settings.host, settings.credentials, secrets=secrets),
        timeout=settings.timeout, max_retries=settings.max_retries,
        max_concurrency=settings.max_concurrency,
        requests_per_second=settings.requests_per_second)
    return OciRegistry(options, metrics=metrics, on_request=on_request)


def open_ecr(settings: RegistrySettings, *, metrics: Metrics | None = None) -> Registry:
    from image_updater.registry.ecr import EcrRegistry
    from image_updater.registry.ecr_session import EcrOptions

    ecr = settings.ecr or EcrSettings()
    options = EcrOptions(
        region=ecr.region, account=ecr.account, role_arn=ecr.role_arn,
        role_session_name=ecr.role_session_name, external_id=ecr.external_id,
        endpoint_url=ecr.endpoint_url, sts_endpoint_url=ecr.sts_endpoint_url,
        max_attempts=ecr.max_attempts, max_concurrency=min(settings.max_concurrency, 8),
        requests_per_second=settings.requests_per_second or None)
    return EcrRegistry(settings.host, options=options, metrics=metrics)


def credential_source(host: str, creds: CredentialsSettings, *,
                      secrets: SecretRegistry) -> CredentialSource:
    if creds.docker_config:
        return DockerConfigCredentials(path=Path(creds.docker_config), host=host,
                                       secrets=secrets)
    if creds.password_file:
        return FileCredentials(
            password_file=Path(creds.password_file), username=creds.username,
            username_file=Path(creds.username_file) if creds.username_file else None,
            secrets=secrets)
    if creds.password_env:
        if not creds.username:
            raise ConfigError(f"registry {host}: credentials.password_env needs "
                              "credentials.username as well.")
        return EnvCredentials(username=creds.username, password_env=creds.password_env,
                              secrets=secrets)
    return Anonymous()


class RegistryPool:
    """Registry clients built from settings on first use, with requests counted.

    Built on the factory alone (not the daemon's Runtime) so ``retag`` imports neither git
    nor boto3 unless an ECR host is involved: a PostSync job should start fast.
    """

    def __init__(self, settings: Settings, *, secrets: SecretRegistry,
                 metrics: Metrics | None = None) -> None:
        self._settings = settings
        self._secrets = secrets
        self.metrics = metrics  # a job exports none: prometheus_client is not even imported
        self._open: dict[str, Registry] = {}
        self._sent = 0

    def __call__(self, host: str) -> Registry:
        if host not in self._open:
            self._open[host] = open_registry(self._settings.registry(host),
                                             secrets=self._secrets, metrics=self.metrics,
                                             on_request=self._count)
        return self._open[host]

    def _count(self, _method: str, _url: str) -> None:
        self._sent += 1

    def requests(self) -> int:
        """OCI registry requests sent so far (each retry and token fetch counts)."""
        return self._sent

    async def aclose(self) -> None:
        for registry in self._open.values():
            await registry.aclose()
        self._open.clear()
