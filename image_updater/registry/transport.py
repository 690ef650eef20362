"""The HTTP path to one OCI registry: rate limit → auth flow → one send, retried.

Connection errors, timeouts, 5xx (but 501/505) and 429 are retried through
:func:`image_updater.retry.retry_async` (exponential backoff with full jitter, honouring
``Retry-After``). TLS failures are diagnosed instead: a certificate we cannot verify, or a
plain-HTTP server answering our TLS hello, cannot be fixed by retrying, so they fail at
once with the setting that fixes them. Responses are streamed: callers read and close
them (``async with closing(response)``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import certifi
import httpx

from image_updater.clocks import MonotonicClock, WallClock
from image_updater.errors import (
    ConfigError,
    DigestMismatchError,
    RegistryError,
    ResponseTooLargeError,
    TransientRegistryError,
    truncate,
)
from image_updater.registry.auth import SCOPES_EXTENSION, RegistryAuth
from image_updater.registry.base import sha256_digest
from image_updater.registry.options import RegistryOptions
from image_updater.registry.ratelimit import RateLimiter, Sleep
from image_updater.retry import Backoff, RetryLater, parse_retry_after, retry_async

if TYPE_CHECKING:  # prometheus_client is imported only by processes that export metrics
    from image_updater.observability.metrics import Metrics

log = logging.getLogger(__name__)

_NON_RETRYABLE_5XX = frozenset({501, 505})  # "not implemented" does not get better later
#: bodies up to this size are drained before closing, so the connection is reused
_DRAIN_LIMIT = 64 * 1024

OnRequest = Callable[[str, str], None]
T = TypeVar("T")


class RegistryTransport:
    """Sends requests to one registry host; see the module docstring for the rules."""

    def __init__(self, options: RegistryOptions, *, metrics: Metrics | None,
                 on_request: OnRequest | None, sleep: Sleep, clock: MonotonicClock,
                 wall_clock: WallClock, jitter: Callable[[], float] | None,
                 transport: httpx.AsyncBaseTransport | None) -> None:
        self.host = options.host
        self.options = options
        self.base = options.base_url
        self._origin = httpx.URL(self.base)
        self._metrics = metrics
        self._on_request = on_request
        self.sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self.backoff = Backoff(base=options.backoff_base, maximum=options.backoff_max,
                               jitter=jitter if jitter is not None else random.Random().random)
        self._limiter = RateLimiter(max_concurrency=options.max_concurrency,
                                    requests_per_second=options.requests_per_second,
                                    clock=clock, sleep=sleep)
        self._auth = RegistryAuth(registry=options.host, credentials=options.credentials,
                                  clock=wall_clock, origin=self.base, insecure=options.insecure)
        self._verify = _tls_verify(options)
        self._client = httpx.AsyncClient(
            auth=self._auth, verify=self._verify, http1=True, http2=False,
            timeout=httpx.Timeout(options.timeout), follow_redirects=True,
            limits=_limits(options), event_hooks={"request": [self._request_hook]},
            transport=transport)
        # The blocking twins for bulk HEADs (see send_blocking): one client per worker thread,
        # made on the thread's first use, so 16 threads do not queue on one pool's lock.
        self._sync_clients: list[httpx.Client] = []
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._hook_lock = threading.Lock()  # on_request is called from worker threads too
        self._series: dict[tuple[str, str], tuple[Any, Any]] = {}

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            # Running lookups end within one request timeout; queued ones are dropped.
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        for client in self._sync_clients:
            client.close()
        self._sync_clients.clear()
        await self._client.aclose()

    # -- the blocking path, for bulk HEADs ---------------------------------------------------

    async def in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` on this registry's pool of ``max_concurrency`` threads.

        Why threads: a HEAD through httpx's async stack costs ~2-3 ms of CPU here, the same
        HEAD through the sync client on a thread ~0.6 ms (bench/README.md, "What changed for
        issue 16"); the pool size is the concurrency cap of this path.
        """
        if self._pool is None:  # made here, on the loop's thread: never twice
            self._pool = ThreadPoolExecutor(max_workers=self.options.max_concurrency,
                                            thread_name_prefix=f"registry-{self.host}")
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def send_blocking(self, request: httpx.Request) -> httpx.Response:
        """One attempt of ``request`` on the sync client, body read; for a worker thread.

        Fails like one attempt of :meth:`request`: ``RetryLater`` (carrying the error the
        last attempt raises) when another try may help, the TLS diagnoses at once. The
        caller hands a ``RetryLater`` to :meth:`request` as ``first``, which carries on
        with the remaining attempts, so a tag costs the same requests on either path.
        """
        self._limiter.wait_blocking()
        started = self._clock()
        status = "error"
        try:
            response = self._thread_client().send(request)
            status = str(response.status_code)
        except (httpx.TransportError, TransientRegistryError) as exc:
            raise self._retry_later(request, exc) from exc
        except httpx.HTTPError as exc:
            raise self._http_error(request, exc) from exc
        finally:
            self._observe(request.method, status, started)
        if _retryable(response.status_code):
            raise self._retry_status(request, response, 1)
        return response

    def _thread_client(self) -> httpx.Client:
        """This worker thread's client (one keep-alive connection; TLS context shared)."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(
                auth=self._auth, verify=self._verify, http1=True, http2=False,
                timeout=httpx.Timeout(self.options.timeout), follow_redirects=True,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                event_hooks={"request": [self._sync_request_hook]})
            with self._hook_lock:
                self._sync_clients.append(client)
            self._local.client = client
        return client

    def build(self, method: str, url: str, headers: Mapping[str, str]) -> httpx.Request:
        """A request for :meth:`send_blocking` (no body, default scopes)."""
        return self._client.build_request(method, url, headers=headers)

    async def request(self, method: str, url: str, *,
                      headers: Mapping[str, str] | None = None,
                      content: bytes | AsyncIterator[bytes] | None = None,
                      params: Mapping[str, str] | None = None,
                      scopes: tuple[str, ...] | None = None,
                      retries: int | None = None,
                      first: RetryLater | None = None) -> httpx.Response:
        """Send with retries; the response is streamed: the caller reads and closes it.

        ``first``: the outcome of a first attempt already made by :meth:`send_blocking`.
        """
        extensions = {SCOPES_EXTENSION: scopes} if scopes else None
        if params:
            # httpx would replace an existing query (an upload's _state), so merge by hand.
            url = str(httpx.URL(url).copy_merge_params(params))
        request = self._client.build_request(method, url, headers=headers, content=content,
                                             extensions=extensions)
        attempts = (self.options.max_retries if retries is None else retries) + 1
        tries = 0

        async def attempt() -> httpx.Response:
            nonlocal tries, first
            tries += 1
            if first is not None:
                later, first = first, None
                raise later
            return await self._attempt(request, tries)

        def on_retry(failed: int, total: int, reason: str, delay: float) -> None:
            log.info("%s %s failed (%s); attempt %d/%d, retrying in %.2f s", method,
                     shown(str(request.url)), reason, failed, total, delay)

        return await retry_async(attempt, attempts=attempts, backoff=self.backoff,
                                 sleep=self.sleep, on_retry=on_retry)

    async def _attempt(self, request: httpx.Request, tries: int) -> httpx.Response:
        try:
            response = await self._send_once(request)
        except (httpx.TransportError, TransientRegistryError) as exc:
            raise self._retry_later(request, exc, tries) from exc
        if not _retryable(response.status_code):
            return response
        await response.aclose()
        raise self._retry_status(request, response, tries)

    def _retry_later(self, request: httpx.Request, exc: Exception, tries: int = 1
                     ) -> RetryLater:
        """A failed send, as a retry (or an error retrying cannot fix, raised at once)."""
        if _certificate_rejected(exc):
            raise self._untrusted(request, exc) from exc
        if _not_tls(exc):
            raise self._plain_http(request) from exc
        reason = _transport_reason(exc)
        return RetryLater(reason, final=self._unavailable(request, reason, tries))

    def _retry_status(self, request: httpx.Request, response: httpx.Response, tries: int
                      ) -> RetryLater:
        reason = f"HTTP {response.status_code}"
        # A Retry-After of 0 would retry at once, in a burst: take the backoff instead.
        delay = parse_retry_after(response.headers.get("Retry-After"), now=self._wall_clock(),
                                  cap=self.options.retry_after_max) or None
        return RetryLater(reason, delay=delay, final=self._unavailable(request, reason, tries))

    async def _send_once(self, request: httpx.Request) -> httpx.Response:
        started = self._clock()
        status = "error"
        try:
            async with self._limiter.slot():
                response = await self._client.send(request, stream=True)
            status = str(response.status_code)
            return response
        except httpx.TransportError:
            raise
        except httpx.HTTPError as exc:
            raise self._http_error(request, exc) from exc
        finally:
            self._observe(request.method, status, started)

    def _http_error(self, request: httpx.Request, exc: httpx.HTTPError) -> RegistryError:
        # Redirect loops, bad URLs: no retry fixes these.
        return RegistryError(
            f"{request.method} {shown(str(request.url))} on registry {self.host} failed: "
            f"{type(exc).__name__}: {truncate(str(exc), 200)}.", registry=self.host,
            url=shown(str(request.url)))

    async def _request_hook(self, request: httpx.Request) -> None:
        self._sync_request_hook(request)

    def _sync_request_hook(self, request: httpx.Request) -> None:
        if self._on_request is not None:
            with self._hook_lock:  # callers count with `+= 1`, which threads could interleave
                self._on_request(request.method, str(request.url))

    def _observe(self, method: str, status: str, started: float) -> None:
        if self._metrics is None:
            return
        series = self._series.get((method, status))
        if series is None:  # labels() costs a lock and a dict of label tuples: once per pair
            series = self._series[(method, status)] = (
                self._metrics.registry_requests.labels(registry=self.host, method=method,
                                                       status=status),
                self._metrics.registry_latency.labels(registry=self.host, method=method))
        series[0].inc()
        series[1].observe(max(0.0, self._clock() - started))

    # -- checks on what the registry sends -------------------------------------------------

    async def read_capped(self, response: httpx.Response, limit: int, *, what: str) -> bytes:
        """The whole body, refused when it is larger than ``limit`` bytes."""
        length = response.headers.get("Content-Length", "")
        body = bytearray()
        if not (length.isdigit() and int(length) > limit):
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    break
        if len(body) > limit or (length.isdigit() and int(length) > limit):
            url = shown(str(response.request.url))
            raise ResponseTooLargeError(
                f"Registry {self.host} sent a {what} larger than {limit} bytes at {url}; "
                "refusing to read it.", registry=self.host, url=url)
        return bytes(body)

    def is_origin(self, target: httpx.URL) -> bool:
        """Whether ``target`` is on the configured registry's own scheme, host and port."""
        return (target.scheme, target.host, target.port) == (
            self._origin.scheme, self._origin.host, self._origin.port)

    def from_origin(self, response: httpx.Response, what: str) -> None:
        """Refuse a ``what`` that a redirect fetched from another host: digests and manifests
        are taken only from the configured registry (blobs, being hashed, may come from a
        storage redirect)."""
        if response.history and not self.is_origin(response.url):
            first = shown(str(response.history[0].request.url))
            raise RegistryError(
                f"Registry {self.host} redirected {first} to another host "
                f"({shown(str(response.url))}); image-updater takes {what}s only from the "
                "configured registry host, so nothing was read from there or written. Serve "
                "manifests from the registry itself (storage redirects are for blobs).",
                registry=self.host, url=shown(str(response.url)))

    def same_origin(self, target: httpx.URL, what: str) -> str:
        """Refuse URLs on another host: our credentials must not follow them there."""
        if not self.is_origin(target):
            raise RegistryError(
                f"Registry {self.host} sent a {what} to another host ({shown(str(target))}); "
                "refusing to follow it. Check the registry's external URL settings.",
                registry=self.host, url=shown(str(target)))
        return str(target)

    def manifest_digest(self, url: str, reference: str, body: bytes,
                        reported: str | None) -> str:
        """The digest of manifest ``body`` read from ``url``: its hash, which must equal
        ``reference`` when that is a digest and the ``Docker-Content-Digest`` the registry
        ``reported`` when it sent one (else DigestMismatchError)."""
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and digest != reference:
            raise self.mismatch(url, f"served a manifest hashing to {digest}, not {reference}")
        if reported and reported.startswith("sha256:") and reported != digest:
            raise self.mismatch(
                url, f"reports digest {truncate(reported, 80)} for a manifest hashing to {digest}")
        return digest

    def mismatch(self, url: str, what: str) -> DigestMismatchError:
        return DigestMismatchError(
            f"Registry {self.host} {what} (at {shown(url)}); the content is corrupt or was "
            "tampered with, so it is not used.", registry=self.host, url=shown(url))

    # -- errors ------------------------------------------------------------------------------

    def _unavailable(self, request: httpx.Request, reason: str,
                     attempts: int) -> TransientRegistryError:
        url = shown(str(request.url))
        return TransientRegistryError(
            f"Registry {self.host} did not answer {request.method} {url} successfully after "
            f"{attempts} attempt(s) ({reason}); it will be retried next cycle.",
            registry=self.host, url=url)

    def _plain_http(self, request: httpx.Request) -> RegistryError:
        url = shown(str(request.url))
        return RegistryError(
            f"Registry {self.host} did not answer the TLS handshake at {url} with TLS: it "
            "probably serves plain HTTP. If that is intended (a local or test registry), allow "
            f"it in the settings file: registries: [{{host: '{self.host}', insecure: true}}]. "
            "Retrying cannot help, so this is not retried.", registry=self.host, url=url)

    def _untrusted(self, request: httpx.Request, exc: BaseException) -> RegistryError:
        url = shown(str(request.url))
        bundle = self.options.ca_file or "certifi's public roots"
        return RegistryError(
            f"The TLS certificate of registry {self.host} could not be verified against "
            f"{bundle} ({truncate(str(exc), 160)}) at {url}; set ca_file to the CA bundle "
            "that signed it. Retrying cannot help, so this is not retried.",
            registry=self.host, url=url)


class closing:  # lowercase: used like contextlib.closing
    """``async with closing(response)``: close a streamed response on every path.

    Closing a response whose body was not read makes httpcore drop the connection, so
    every HEAD would cost a new TCP (and TLS) handshake. Small bodies (HEADs, error
    documents) are drained first so the connection goes back to the pool.
    """

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    async def __aenter__(self) -> httpx.Response:
        return self._response

    async def __aexit__(self, *exc: object) -> None:
        response = self._response
        try:
            if not response.is_stream_consumed and _small_body(response):
                await response.aread()
        except httpx.HTTPError:
            pass  # the connection is dropped instead; nothing else depends on it
        finally:
            await response.aclose()


def shown(url: str) -> str:
    """A URL fit for messages: without its query (upload state, scopes) or user info."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(query=None, fragment=None, userinfo=b""))


def _small_body(response: httpx.Response) -> bool:
    if response.request.method == "HEAD" or response.status_code in (204, 304):
        return True
    length = response.headers.get("Content-Length", "")
    return length.isdigit() and int(length) <= _DRAIN_LIMIT


def _limits(options: RegistryOptions) -> httpx.Limits:
    return httpx.Limits(max_connections=options.max_concurrency,
                        max_keepalive_connections=options.max_concurrency)


def _tls_verify(options: RegistryOptions) -> ssl.SSLContext | bool:
    if options.insecure_skip_verify or options.insecure:
        return False  # plain HTTP: no certificate to verify, and loading roots costs ~15 ms
    cafile = str(options.ca_file) if options.ca_file is not None else certifi.where()
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"registry {options.host}: ca_file {cafile} cannot be loaded as a PEM certificate "
            f"bundle ({type(exc).__name__}); fix the path or the file."
        ) from exc


def _retryable(status: int) -> bool:
    return status == 429 or (status >= 500 and status not in _NON_RETRYABLE_5XX)


def _certificate_rejected(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):  # the ssl error sits a few causes down (httpx ← httpcore ← ssl)
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _not_tls(exc: BaseException) -> bool:
    """True when the server's answer to our TLS hello was not TLS (a plain HTTP server)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError) and getattr(seen, "reason", "") in (
                "WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
                "HTTP_REQUEST"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _transport_reason(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout: {type(exc).__name__}"
    if isinstance(exc, TransientRegistryError):
        return str(exc)
    return f"{type(exc).__name__}: {truncate(str(exc), 120)}"
