"""``POST /api/v1/promotions``: ``image-updater promote`` done by the daemon for a job.

A PostSync job that tested a digest asks the daemon to promote it, proving who it is with
a service-account token (or a static API token); the daemon does exactly what the CLI's
``promote`` does (:func:`image_updater.engine.promote.promote`: git's source environment
must hold the digest, the digest is verified, the target tag is moved by compare-and-swap)
with its own clone and registry credentials, so the job carries neither.

- Promotions to one target tag are serialized here (one asyncio lock per registry,
  repository and tag), so of two requests racing for a tag one wins and the other sees
  the new tag: a conflict (409), or "already promoted" (200) when it asked for the same.
- Status codes mirror the CLI's exit codes (:data:`STATUS_BY_EXIT`); the JSON body carries
  the exit code itself (``code``), so the CLI client exits exactly as ``promote`` would.
- ``evidence`` is kept per (app, target env, digest) in :class:`EvidenceStore`, which the
  next cycle consults when it builds the change landing that digest in the target
  environment (``Image-Updater-Evidence`` trailers); a cycle for the app is requested at once.

Request body (JSON, at most ``api.max_body_bytes``)::

    {"app": "shop", "from": "staging", "to": "prod", "digest": "sha256:…",
     "evidence": {"argocd/sync-revision": "3f2a…", "job": "shop-promote-x7k2"}}
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from image_updater.changes import Change, CycleResult
from image_updater.config.settings import Settings
from image_updater.daemon.http_limits import BodyTooLarge
from image_updater.daemon.service import Daemon
from image_updater.engine.promote import RetagResult, promote, target_digest
from image_updater.errors import ImageUpdaterError, InvalidReferenceError, NotFoundError
from image_updater.exit_codes import ExitCode, exit_code_for
from image_updater.gitops.message import MAX_EVIDENCE_ITEMS, evidence_problem
from image_updater.identity import Authenticator, Principal
from image_updater.model import App, Environment
from image_updater.notify.dispatcher import Dispatcher
from image_updater.notify.events import CommandEvent, told
from image_updater.observability.logs import Throttle, scrub
from image_updater.observability.metrics import Metrics
from image_updater.registry.base import check_digest
from image_updater.registry.reference import parse_reference
from image_updater.wiring.runtime import Runtime

log = logging.getLogger("image_updater.promotions")

PATH = "/api/v1/promotions"
#: HTTP status of each exit code; the body's ``code`` is the exit code itself
STATUS_BY_EXIT: dict[ExitCode, int] = {
    ExitCode.OK: 200, ExitCode.USAGE: 400, ExitCode.CONFIG: 400, ExitCode.NOT_FOUND: 404,
    ExitCode.CONFLICT: 409, ExitCode.HELD: 423, ExitCode.TEMPORARY: 503,
    ExitCode.INTEGRITY: 502, ExitCode.INTERNAL: 500,
    # the target environment's signature gate refused the digest: the request was understood
    # and is well-formed, but that digest may not go there until it is signed
    ExitCode.UNVERIFIED: 422,
    # AUTH: 401/403 for the caller's identity; the daemon's own registry or git credentials
    # refused are the daemon's problem, not the caller's (see _status)
    ExitCode.AUTH: 502,
}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
_FIELDS = frozenset({"app", "from", "to", "digest", "evidence"})


class UsageError(InvalidReferenceError):
    """A request body the API cannot use (400, exit code 2, as the CLI's usage errors)."""

    reason = "usage"


@dataclass(frozen=True)
class PromotionRequest:
    app: str
    source: str
    target: str
    digest: str
    evidence: Mapping[str, str] = field(default_factory=dict)


def parse_request(body: bytes) -> PromotionRequest:
    """The validated request; UsageError names the first field that is wrong. The body is
    untrusted: every field has one type, names a bounded pattern, and nothing else is kept."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise UsageError("The request body is not JSON; send "
                         '{"app", "from", "to", "digest", "evidence"?}.') from None
    if not isinstance(data, dict):
        raise UsageError("The request body must be a JSON object with app, from, to, digest.")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise UsageError(f"Unknown field(s) {', '.join(repr(k[:40]) for k in unknown[:5])}; "
                         "the fields are app, from, to, digest and evidence.")
    names = {key: _name(data, key) for key in ("app", "from", "to")}
    digest = data.get("digest")
    if not isinstance(digest, str):
        raise UsageError("digest is required: the digest the job tested, sha256:…, as "
                         "`promote --digest` takes it.")
    return PromotionRequest(app=names["app"], source=names["from"], target=names["to"],
                            digest=check_digest(digest, what="digest"),
                            evidence=_evidence(data.get("evidence")))


def _name(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise UsageError(f"{key} must be an app or environment name (letters, digits, '.', "
                         f"'_', '-'), not {str(value)[:60]!r}.")
    return value


def _evidence(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_EVIDENCE_ITEMS:
        raise UsageError(f"evidence must be an object of at most {MAX_EVIDENCE_ITEMS} "
                         "string values, e.g. {\"job\": \"shop-promote-x7k2\"}.")
    for key, item in value.items():
        problem = evidence_problem(key, item)
        if problem is not None:
            raise UsageError(f"{problem[0].upper()}{problem[1:]}.")
    return dict(value)


class EvidenceStore:
    """Evidence by (app, target env, digest), until the change landing it is built.

    In memory and bounded (``limit`` entries, each kept ``ttl`` seconds): a restart loses
    what no cycle recorded yet, and the promotion itself is unaffected.
    """

    def __init__(self, *, limit: int = 1000, ttl: float = 86400.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._items: OrderedDict[tuple[str, str, str], tuple[float, dict[str, str]]] = \
            OrderedDict()
        self._limit, self._ttl, self._clock = limit, ttl, clock

    def put(self, app: str, env: str, digest: str, evidence: Mapping[str, str]) -> None:
        key = (app, env, digest)
        self._items.pop(key, None)
        self._items[key] = (self._clock(), dict(evidence))
        while len(self._items) > self._limit:
            self._items.popitem(last=False)

    def for_change(self, change: Change) -> Mapping[str, str]:
        """Called from the cycle's worker threads; reads only (a dict read is atomic)."""
        found = self._items.get((change.app, change.env, change.digest))
        if found is None or self._clock() - found[0] > self._ttl:
            return {}
        return found[1]


class PromotionHost(Protocol):
    """What the service needs of the daemon (:class:`~image_updater.daemon.service.Daemon`)."""

    apps: list[App]
    runtime: Runtime
    notifier: Dispatcher | None
    cycles: int                       # cycles finished so far
    in_cycle: bool
    last_result: CycleResult | None

    @property
    def metrics(self) -> Metrics: ...

    def request_apps(self, names: set[str]) -> None: ...

    async def cycle(self, apps: list[App]) -> CycleResult: ...


class PromotionService:
    """Promotions for API callers, with the daemon's runtime; call on the daemon's loop."""

    def __init__(self, host: PromotionHost, authenticator: Authenticator, *,
                 evidence: EvidenceStore | None = None) -> None:
        self.host = host
        self.authenticator = authenticator
        self.evidence = evidence or EvidenceStore()
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        #: apps whose tag this service moved -> the number of cycles that must have finished
        #: before one that began after the move covers them (see :meth:`cycle_done`)
        self._unlanded: dict[str, int] = {}
        #: refused callers are each counted in metrics; the log gets one line per burst
        self.refusals = Throttle(10.0)

    @classmethod
    def for_daemon(cls, daemon: Daemon, settings: Settings) -> PromotionService:
        """The daemon's service: its identities (token files are read now, so a missing one
        stops the start) and its evidence, which the daemon's cycles consult."""
        service = cls(daemon, Authenticator(settings.api, secrets=daemon.secrets))
        daemon.evidence_for = service.evidence.for_change
        daemon.after_cycle.append(service.cycle_done)
        daemon.before_close.append(service.land)  # after the port drained its requests
        return service

    @property
    def settings(self) -> Settings:
        return self.host.runtime.settings

    async def promote(self, principal: Principal, req: PromotionRequest) -> RetagResult:
        """What ``image-updater promote APP --from --to --digest`` does, for ``principal``."""
        principal.require(req.app, req.target)  # before any lookup: no probing of names
        app = self._app(req.app)
        source, target = self._env(app, req.source), self._env(app, req.target)
        image = parse_reference(app.image)
        key = (image.registry, image.repository, target.strategy.tag or target.name)
        registry_for = self.host.runtime.registry_for
        try:
            # What the tag holds as the request arrives is what it must still hold when its
            # turn comes: of requests racing for one tag, one moves it and the others see a
            # conflict (or "already promoted", when they asked for the same digest).
            seen = await target_digest(app, target, registry_for)
            async with self._locks.setdefault(key, asyncio.Lock()):
                result = await promote(
                    app, source, target, digest=req.digest, registry_for=registry_for,
                    read_file=self._reader(app), expect_current=seen,
                    values_file_bytes=self.settings.limits.values_file_bytes)
        except ImageUpdaterError as exc:
            self._tell(_refused(req, exc, principal))
            raise
        evidence = {**req.evidence, "promoted-by": principal.name}
        self.evidence.put(app.name, target.name, result.digest, evidence)
        self.host.request_apps({app.name})  # land it in git now, not at the next interval
        if result.status == "promoted":
            # a cycle already running may have read the registry before the tag moved
            self._unlanded[app.name] = self.host.cycles + (1 if self.host.in_cycle else 0)
            self._tell(_done(req, result, principal))
        log.info("%s by %s: %s", "promotion" if result.status == "promoted" else "replay",
                 principal.name, result.line(), extra={"app": app.name, "env": target.name})
        return result

    def cycle_done(self) -> None:
        """After each cycle (on the loop): apps it covered, having begun after their tag
        moved, are in git now."""
        result = self.host.last_result
        if result is None or not self._unlanded:
            return
        covered = {c.app for c in result.changes} | {app for app, _ in result.unchanged}
        for name in covered & set(self._unlanded):
            if self.host.cycles > self._unlanded[name]:
                del self._unlanded[name]

    async def land(self) -> None:
        """The daemon is stopping and its port has drained: a tag the API moved that no
        cycle has written to git yet is written now, so the process never exits with the
        registry and git disagreeing (and the caller's evidence still makes its trailers).
        Bounded by ``server.shutdown_grace``; what is left then, the next start writes."""
        apps = [a for a in self.host.apps if a.name in self._unlanded]
        if not apps:
            return
        names = ", ".join(a.name for a in apps)
        log.info("stopping: landing the promotion(s) of %s in git first", names)
        try:
            async with asyncio.timeout(self.settings.server.shutdown_grace):
                await self.host.cycle(apps)
        except TimeoutError:
            log.warning("the promotion(s) of %s were not landed in git within "
                        "server.shutdown_grace; the next start writes them", names)
        except Exception:
            log.exception("landing the promotion(s) of %s failed (a bug; please report it); "
                          "the next start writes them", names)

    def _reader(self, app: App) -> Callable[[str], str | None]:
        def read_head(path: str) -> str | None:  # in a worker thread, as the CLI's
            repo = self.host.runtime.repo_for(app.git)
            with repo.locked("the promotion API's read"):
                repo.sync()  # the head of the deploy branch now: what Argo CD applies
                return repo.read(path)

        return read_head

    def _app(self, name: str) -> App:
        for app in self.host.apps:
            if app.name == name:
                return app
        raise NotFoundError(f"No app is named {name!r} in the daemon's policies; check the "
                            "name (the PostSync job's IMAGE_UPDATER_APP).")

    def _env(self, app: App, name: str) -> Environment:
        for env in app.environments:
            if env.name == name:
                return env
        known = ", ".join(e.name for e in app.environments)
        raise NotFoundError(f"App {app.name} has no environment {name!r} (it has {known}); "
                            "fix from/to.")

    def _tell(self, event: CommandEvent) -> None:
        """Queue the outcome for the sinks, masked as the CLI's (never waits)."""
        notifier = self.host.notifier
        if notifier is not None:
            event = replace(event, summary=scrub(event.summary, self.host.runtime.secrets))
            notifier.publish([told(event, now=datetime.now(UTC))])


def _done(req: PromotionRequest, result: RetagResult, who: Principal) -> CommandEvent:
    return CommandEvent("promotion.done", req.app, req.target,
                        f"{req.app} promoted from {req.source} to {req.target} by {who.name}: "
                        f"{result.line()}",
                        {"digest": result.digest, "previous": result.previous or "",
                         "tag": result.destination, "by": who.name})


def _refused(req: PromotionRequest, exc: ImageUpdaterError, who: Principal) -> CommandEvent:
    return CommandEvent("promotion.refused", req.app, req.target,
                        f"Promoting {req.app} from {req.source} to {req.target} for "
                        f"{who.name} was refused: {exc}", {"reason": exc.reason})


# -- HTTP ------------------------------------------------------------------------------------


def promotion_routes(service: PromotionService) -> list[BaseRoute]:
    """The API's routes, for the daemon's app factory (``build_app(extra_routes=…)``)."""

    async def endpoint(request: Request) -> Response:
        response, outcome = await handle(service, request)
        metrics = service.host.metrics
        metrics.api_requests.labels(route=PATH, code=str(response.status_code)).inc()
        metrics.api_promotions.labels(outcome=outcome).inc()
        return response

    return [Route(PATH, endpoint, methods=["POST"], name="promotions")]


async def handle(service: PromotionService, request: Request) -> tuple[Response, str]:
    """The answer, and the outcome the metrics count it under (a bounded label: promoted,
    already, or the refusal's reason)."""
    secrets = service.host.runtime.secrets
    try:
        principal = await service.authenticator.authenticate(
            request.headers.get("authorization"))
        req = parse_request(await _body(request, service.settings.api.max_body_bytes))
        result = await service.promote(principal, req)
    except _TooLarge as exc:
        return _error(413, "too_large", ExitCode.USAGE, str(exc)), "too_large"
    except ClientDisconnect:  # the caller left (or the request deadline cut it off)
        return _error(400, "disconnected", ExitCode.USAGE, "The client disconnected."), \
            "disconnected"
    except ImageUpdaterError as exc:
        code = exit_code_for(exc)
        if code is ExitCode.AUTH or exc.reason in ("unauthenticated", "permission_denied"):
            refused = service.refusals.due()  # anyone can send bad tokens: one line per burst
            if refused:
                log.warning("promotion API refused %d caller(s) in the last %.0f s; the "
                            "latest: %s", refused, service.refusals.every, scrub(str(exc), secrets))
        return _error(http_status(exc), exc.reason, code, scrub(str(exc), secrets)), exc.reason
    except Exception as exc:  # a bug: a 500 with a message, never a traceback to the caller
        log.exception("the promotion API failed unexpectedly (a bug; please report it)")
        return _error(500, "internal", ExitCode.INTERNAL,
                      f"unexpected {type(exc).__name__}; this is a bug, see the daemon's log."
                      ), "internal"
    return JSONResponse({"status": result.status, "message": result.line(),
                         "digest": result.digest, "destination": result.destination,
                         "previous": result.previous, "notes": list(result.notes),
                         "code": int(ExitCode.OK)}), result.status


def http_status(exc: ImageUpdaterError) -> int:
    """The HTTP status the API answers ``exc`` with (README: "POST /api/v1/promotions")."""
    code = exit_code_for(exc)
    if exc.reason == "unauthenticated":
        return 401
    if exc.reason == "permission_denied":
        return 403
    return STATUS_BY_EXIT.get(code, 409)  # a code added later: refused, by its own code


def _error(status: int, error: str, code: ExitCode, message: str) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="image-updater"'} if status == 401 else None
    return JSONResponse({"error": error, "code": int(code), "message": message},
                        status_code=status, headers=headers)


class _TooLarge(Exception):
    pass


async def _body(request: Request, limit: int) -> bytes:
    """At most ``limit`` bytes of JSON; a larger body is refused as soon as it is seen."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        raise UsageError("Send the request as Content-Type: application/json.")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(f"The body has {declared} bytes, more than the {limit} allowed "
                        "(api.max_body_bytes).")
    body = b""
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise _TooLarge(f"The body is larger than the {limit} bytes allowed "
                                "(api.max_body_bytes).")
    except BodyTooLarge as exc:  # the port's own cap (server.max_body_bytes) was lower
        raise _TooLarge(f"{str(exc).capitalize()}.") from None
    return body
