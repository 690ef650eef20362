"""The status page (``GET /``) and ``GET /api/v1/status``, served from a snapshot.

The status of every environment costs a registry round and a git fetch per deploy
repository (:func:`~image_updater.engine.status.gather`); a page load must cost neither. A
:class:`StatusBoard` computes a :class:`Snapshot` with the status engine in the background,
after each of the daemon's cycles, and when a reader finds it older than
``status_page.max_age`` (holds and releases pushed to git between cycles show up then).
Requests only render the latest snapshot, and the page says when it was computed.

The page is plain server-rendered HTML: every value from a registry or git (tags, commit
authors, messages, errors) is escaped, links are only ever http(s), and the
Content-Security-Policy allows no script at all (only the page's own stylesheet, by hash).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from image_updater.config.status_page import StatusPageSettings
from image_updater.daemon.service import Daemon
from image_updater.daemon.status_html import STYLE_HASH, Snapshot, prepare_table, render_page
from image_updater.engine.status import EnvStatus, StatusDeps, gather, recent_history
from image_updater.errors import ConfigError, ImageUpdaterError
from image_updater.gitops.history import HistoryEntry
from image_updater.identity.authenticator import Authenticator
from image_updater.model import App
from image_updater.observability.logs import scrub
from image_updater.observability.metrics import Metrics
from image_updater.secrets import SecretRegistry
from image_updater.wiring.runtime import Runtime

log = logging.getLogger("image_updater.status_page")

#: rows and recent history per app: what one snapshot holds
Computed = tuple[Sequence[EnvStatus], Mapping[str, Sequence[HistoryEntry]]]
#: refuses a request (its response) or lets it through (None); the promotion API's identities
Authorize = Callable[[Request], Awaitable[Response | None]]


class StatusBoard:
    """Keeps the snapshot fresh while someone reads it: recomputed after each cycle (the
    daemon calls :meth:`cycle_done`) and when a reader finds it older than ``max_age``.

    ``compute`` runs the status engine (:func:`engine_source`); ``clock`` is Unix time.
    Refreshes never overlap: asks made during one are coalesced into one more. While nobody
    has read the page or the API for ``WATCHED`` seconds, a cycle only marks the snapshot
    stale and the next reader asks for a new one: a daemon nobody watches asks the
    registry and git nothing beyond its cycles.
    """

    #: seconds after a read during which cycles recompute the snapshot straight away
    WATCHED = 900.0

    def __init__(self, *, compute: Callable[[], Awaitable[Computed]],
                 settings: StatusPageSettings, secrets: SecretRegistry,
                 clock: Callable[[], float] = time.time) -> None:
        self.compute = compute
        self.settings = settings
        self.secrets = secrets
        self.clock = clock
        self.snapshot = Snapshot()
        self.refreshes = 0
        self._wanted = False
        self._stale = False
        self._last_read: float | None = None
        self._task: asyncio.Task[None] | None = None

    def cycle_done(self) -> None:
        """A cycle ended (on the daemon's loop): what it wrote is not in the snapshot yet."""
        watched = self._last_read is not None and \
            self.clock() - self._last_read < self.WATCHED
        if watched:
            self.request_refresh()
        else:
            self._stale = True

    def request_refresh(self) -> None:
        """Compute a new snapshot soon. Call on the daemon's loop; never waits."""
        self._wanted = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._refresh_while_wanted(),
                                                                name="status-page")

    def read(self) -> Snapshot:
        """The snapshot to show now; asks for a new one when there is none or it is old."""
        snap, max_age, now = self.snapshot, self.settings.max_age, self.clock()
        self._last_read = now
        at = snap.computed_at
        if at is None or self._stale or (max_age and now - at.timestamp() > max_age):
            self.request_refresh()
        return snap

    async def settled(self) -> None:
        """Wait until no refresh is under way or wanted (tests; readers never wait)."""
        while (task := self._task) is not None and not task.done():
            await asyncio.wait({task})

    async def aclose(self) -> None:
        """Stop a refresh under way (the daemon is stopping; the snapshot dies with it)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _refresh_while_wanted(self) -> None:
        while self._wanted:
            self._wanted = self._stale = False
            await self.refresh()

    async def refresh(self) -> Snapshot:
        """Compute the snapshot now. A failure keeps the previous rows and shows the error."""
        started = time.monotonic()
        try:
            rows, history = await self.compute()
            # encoding and rendering 1,000 apps takes a while: not on the daemon's loop
            snapshot = await asyncio.to_thread(self._snapshot, rows, history,
                                               time.monotonic() - started)
        except Exception as exc:  # the engine reports per environment; this is a bug or
            # an outage of everything: keep serving the last snapshot, and say so on the page
            message = scrub(f"the status could not be computed: {exc}", self.secrets)
            log.warning("%s; the page keeps the snapshot of %s and tries again after the "
                        "next cycle", message, self._shown_time())
            self.snapshot = dataclasses.replace(self.snapshot, error=message)
            return self.snapshot
        self.snapshot = snapshot
        self.refreshes += 1
        return snapshot

    def _snapshot(self, rows: Sequence[EnvStatus], history: Mapping[str, Sequence[HistoryEntry]],
                  took: float) -> Snapshot:
        # errors quote remote answers; mask them like every other output of the daemon
        masked = tuple(dataclasses.replace(r, error=scrub(r.error, self.secrets))
                       if r.error else r for r in rows)
        body = scrub(json.dumps([r.as_json() for r in masked], indent=2), self.secrets)
        return Snapshot(rows=masked, history=history, took=took,
                        computed_at=datetime.fromtimestamp(self.clock(), UTC),
                        body=(body + "\n").encode(), table=prepare_table(masked, history))

    def _shown_time(self) -> str:
        at = self.snapshot.computed_at
        return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else "none (no snapshot yet)"


def mount(daemon: Daemon, settings: StatusPageSettings, *, authorize: Authorize | None = None
          ) -> tuple[StatusBoard, list[BaseRoute]]:
    """The status page of ``daemon``: its board and routes. The daemon tells the board when
    a cycle ends and closes it when it stops; the caller serves the routes."""
    board = StatusBoard(compute=engine_source(lambda: daemon.apps, daemon.runtime,
                                              history=settings.history),
                        settings=settings, secrets=daemon.secrets, clock=daemon.clock)
    daemon.after_cycle.append(board.cycle_done)
    daemon.on_stop.append(board.aclose)
    return board, status_routes(board, authorize=authorize, metrics=daemon.metrics)


def identity_check(authenticator: Authenticator) -> Authorize | None:
    """``access: authenticated``: the promotion API's identities may read, when it has any
    (None otherwise, so the start is refused). A caller must present a token or service
    account the API knows and that is granted something: 401 or 403 as the API answers."""
    if not authenticator.api.enabled:
        return None

    async def authorize(request: Request) -> Response | None:
        try:
            who = await authenticator.authenticate(request.headers.get("authorization"))
        except ImageUpdaterError as exc:
            status = 401 if exc.reason == "unauthenticated" else 503
            return _refusal(status, exc.reason, str(exc))
        if not who.grants:
            return _refusal(403, "permission_denied", (
                f"{who.name} is granted nothing in api.service_accounts, so it may not read "
                "the status either; grant it an app there, or use another identity."))
        return None

    return authorize


def _refusal(status: int, reason: str, message: str) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="image-updater"'} if status == 401 else {}
    return JSONResponse({"error": reason, "message": message}, status_code=status,
                        headers=headers)


def engine_source(apps: Callable[[], Sequence[App]], runtime: Runtime, *,
                  history: int) -> Callable[[], Awaitable[Computed]]:
    """The status engine over the daemon's current apps, its clones and its registry clients:
    the same data as ``image-updater status`` (one implementation)."""

    async def compute() -> Computed:
        current = list(apps())
        deps = StatusDeps(registry_for=runtime.registry_for, repo_for=runtime.repo_for,
                          approvals_for=runtime.approvals_for,
                          values_file_bytes=runtime.settings.limits.values_file_bytes,
                          verified=runtime.verified)
        rows = await gather(current, deps)
        recent = await asyncio.to_thread(recent_history, current, deps, limit=history) \
            if history else {}
        return rows, recent

    return compute


# ---- routes ----------------------------------------------------------------------------------

def _security_headers(style_hash: str) -> dict[str, str]:
    """No script of any kind; only the page's own stylesheet (allowed by its hash)."""
    return {
        "Content-Security-Policy": (f"default-src 'none'; style-src '{style_hash}'; "
                                    "img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                                    "frame-ancestors 'none'"),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def status_routes(board: StatusBoard, *, authorize: Authorize | None = None,
                  now: Callable[[], datetime] | None = None,
                  metrics: Metrics | None = None) -> list[BaseRoute]:
    """``GET /`` and ``GET /api/v1/status``. With ``access: authenticated`` every request
    goes through ``authorize`` first (the promotion API's identities). Each answer is
    counted in ``metrics`` (image_updater_api_requests_total{route,code})."""
    if board.settings.access == "authenticated" and authorize is None:
        raise ConfigError("status_page.access is 'authenticated' but the daemon has no "
                          "identities to check (configure the promotion API's api.tokens or "
                          "api.service_accounts), or set status_page.access to 'open'.")
    check = authorize if board.settings.access == "authenticated" else None
    clock = now or (lambda: datetime.now(UTC))
    headers = _security_headers(STYLE_HASH)

    async def page(request: Request) -> Response:
        return _counted(metrics, "/", await _page(request))

    async def _page(request: Request) -> Response:
        if check is not None and (refused := await check(request)) is not None:
            return refused
        html = render_page(board.read(), now=clock(),
                           reload_seconds=board.settings.reload_seconds)
        return HTMLResponse(html, headers=headers)

    async def api(request: Request) -> Response:
        return _counted(metrics, "/api/v1/status", await _api(request))

    async def _api(request: Request) -> Response:
        if check is not None and (refused := await check(request)) is not None:
            return refused
        snap = board.read()
        if snap.computed_at is None:
            message = snap.error or ("the first status is being computed; try again in a "
                                     "few seconds")
            return Response(json.dumps({"error": message}) + "\n", status_code=503,
                            media_type="application/json", headers={"Retry-After": "5"})
        return Response(snap.body, media_type="application/json",
                        headers={"Cache-Control": "no-store",
                                 "X-Status-Computed-At": snap.computed_at.isoformat()})

    return [Route("/", page, methods=["GET"]), Route("/api/v1/status", api, methods=["GET"])]


def _counted(metrics: Metrics | None, route: str, response: Response) -> Response:
    if metrics is not None:
        metrics.api_requests.labels(route=route, code=str(response.status_code)).inc()
    return response
