"""Settings of one OCI registry connection: a small immutable value with named defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from image_updater.errors import ConfigError
from image_updater.registry.credentials import Anonymous, CredentialSource
from image_updater.registry.reference import api_host


@dataclass(frozen=True, kw_only=True)
class RegistryOptions:
    host: str
    """Registry host[:port] as written in image references, e.g. ``registry.example.com``.
    ``docker.io`` is served from ``registry-1.docker.io`` automatically."""

    insecure: bool = False
    """Speak plain HTTP. Never automatic, not even for 127.0.0.1: a registry that is
    reachable over HTTP must be declared so in the configuration."""

    ca_file: Path | None = None
    """PEM bundle to verify the registry's TLS certificate with, instead of certifi's
    public roots (for registries signed by a private CA)."""

    insecure_skip_verify: bool = False
    """Accept any TLS certificate. Only for throwaway test setups: it allows interception."""

    credentials: CredentialSource = field(default_factory=Anonymous)
    """Where the username and password come from; anonymous by default."""

    timeout: float = 10.0
    """Seconds to wait to connect, and between bytes of a response, before giving up."""

    max_retries: int = 4
    """Retries after a connection error, timeout, 5xx or 429, per request (0 = none)."""

    backoff_base: float = 0.5
    """Seconds: retry n waits a random time up to ``backoff_base * 2**n`` (full jitter)."""

    backoff_max: float = 30.0
    """Seconds: upper bound of one backoff wait."""

    retry_after_max: float = 60.0
    """Seconds: longest 429 ``Retry-After`` honoured; longer requests are capped to it."""

    max_concurrency: int = 16
    """Requests in flight to this registry at once; also the connection-pool size."""

    requests_per_second: float = 0.0
    """Average request rate allowed (token bucket, bursts of up to one second's worth);
    0 means unlimited. Useful against registries with pull-rate limits."""

    def __post_init__(self) -> None:
        if not self.host or "/" in self.host or self.host != self.host.strip():
            raise ConfigError(
                f"registry host {self.host!r} is invalid; give host[:port] without a scheme "
                "or path, e.g. 'registry.example.com:5000'."
            )
        for name in ("timeout", "backoff_base", "backoff_max", "retry_after_max"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"registry {self.host}: {name} must be a positive number "
                                  "of seconds.")
        if self.max_retries < 0 or self.max_concurrency < 1 or self.requests_per_second < 0:
            raise ConfigError(
                f"registry {self.host}: max_retries must be >= 0, max_concurrency >= 1 and "
                "requests_per_second >= 0 (0 = unlimited)."
            )

    @property
    def base_url(self) -> str:
        """Where the API lives: ``https://HOST`` (``http://`` only when ``insecure``)."""
        scheme = "http" if self.insecure else "https"
        return f"{scheme}://{api_host(self.host)}"
