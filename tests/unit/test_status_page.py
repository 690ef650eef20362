"""The status page's rendering (escaping, every state, links, phone layout), its routes
(headers, access, the JSON document) and the snapshot board (refresh, failure, coalescing)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from image_updater.config.api import ApiSettings, Grant, TokenSettings
from image_updater.config.holds import Hold
from image_updater.config.settings import load_settings
from image_updater.config.status_page import StatusPageSettings
from image_updater.daemon.status_html import STYLE_HASH, Snapshot, render_page
from image_updater.daemon.status_page import (
    Computed,
    StatusBoard,
    identity_check,
    status_routes,
)
from image_updater.engine.status import EnvStatus
from image_updater.errors import ConfigError
from image_updater.gitops.history import HistoryEntry
from image_updater.identity.authenticator import Authenticator
from image_updater.observability.metrics import Metrics
from image_updater.secrets import SecretRegistry
from tests.fixtures.browser import Dom

A, B = ("sha256:" + c * 64 for c in "ab")
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script>"
HOLD = Hold(app="web", env="prod", kind="hold", by="alice", reason="incident <b>7</b>",
            since="2026-11-30T10:00:00Z")


def row(state: str, env: str = "prod", app: str = "web", **kw: object) -> EnvStatus:
    base: dict[str, object] = {"git_digest": A, "git_tag": "v1.2.3",
                               "since": "2026-11-30T09:00:00+00:00", "how": "update (poll)"}
    return EnvStatus(app=app, env=env, state=state, **{**base, **kw})  # type: ignore[arg-type]


def snapshot(rows: Sequence[EnvStatus], history: dict[str, list[HistoryEntry]] | None = None,
             **kw: object) -> Snapshot:
    return Snapshot(rows=tuple(rows), history=history or {},  # type: ignore[arg-type]
                    computed_at=datetime(2026, 11, 30, 11, 59, 30, tzinfo=UTC), **kw)


def page(rows: Sequence[EnvStatus], **kw: object) -> str:
    return render_page(snapshot(rows, **kw), now=NOW, reload_seconds=30)


# ---- rendering -------------------------------------------------------------------------------

STATES = [
    ("in-sync", {}, "state-in-sync"),
    ("pending", {"wanted_digest": B, "wanted_tag": "v1.2.4"}, "state-pending"),
    ("awaiting-approval", {"pull_request": "https://forge.example/o/r/pull/7"},
     "state-awaiting-approval"),
    ("held", {"hold": HOLD}, "state-held"),
    ("rolled-back", {"hold": HOLD}, "state-rolled-back"),
    ("drifted", {"wanted_digest": B, "wanted_tag": "v1.2.3"}, "state-drifted"),
    ("waiting", {"git_digest": None, "git_tag": None, "wanted_tag": "prod"}, "state-waiting"),
    ("failing", {"error": "the registry answered 503"}, "state-failing"),
    ("unverified", {}, "state-unverified"),
    ("quarantined", {}, "state-other"),  # a state this page does not know yet
]


@pytest.mark.parametrize(("state", "extra", "css"), STATES, ids=[s[0] for s in STATES])
def test_each_state_is_shown_by_name_with_its_class(state: str, extra: dict[str, object],
                                                   css: str) -> None:
    dom = Dom(page([row(state, **extra)]))
    cells = [a for a in dom.named("td") if a.get("data-env") == "prod"]
    assert len(cells) == 1 and css in (cells[0]["class"] or "").split()
    assert state in dom.all_text


def test_a_cell_shows_short_digest_tag_age_and_how() -> None:
    text = Dom(page([row("in-sync")])).all_text
    assert "aaaaaaaaaaaa" in text and "a" * 13 not in text  # 12 hex digits, not 64
    assert "v1.2.3" in text and "3 h ago · update (poll)" in text
    assert "Computed 30 s ago at 2026-11-30 11:59:30 UTC" in text


def test_state_details_pull_request_hold_wanted_waiting_error() -> None:
    dom = Dom(page([row("awaiting-approval", "dev", pull_request="https://f.example/pr/7"),
                    row("held", "prod", hold=HOLD),
                    row("pending", "stage", wanted_digest=B, wanted_tag="v1.2.4"),
                    row("waiting", "qa", git_digest=None, wanted_tag="qa"),
                    row("failing", "ops", error="x" * 1000)]))
    assert {"href": "https://f.example/pr/7", "rel": "noopener noreferrer"} in dom.named("a")
    text = dom.all_text
    assert "hold by alice: incident <b>7</b>" in text  # the reason is text, not markup
    assert "registry: v1.2.4 → bbbbbbbbbbbb" in text
    assert "tag qa does not exist yet" in text
    assert "x" * 399 + "…" in text and "x" * 400 not in text  # long errors are cut


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,<script>x</script>",
                                 "JAVASCRIPT:alert(1)", "//evil.example/x",
                                 "branch image-updater/web/prod", " javascript:alert(1)",
                                 # urlsplit raises on it: one such URL from a forge must not
                                 # fail the whole snapshot
                                 "https://[forge.example/pr/1"])
def test_only_http_links_become_links(url: str) -> None:
    dom = Dom(page([row("awaiting-approval", pull_request=url)]))
    assert dom.named("a") == []
    assert url in dom.all_text  # still shown, as text


def test_hostile_values_from_registry_and_git_are_text_never_markup() -> None:
    hostile_history = HistoryEntry(
        commit="c" * 40, when="2026-11-30T08:00:00+00:00", app="web", env="prod",
        action="hand-edit", by=f'{HOSTILE} <"x"@example.com>', old_digest=A, new_digest=B,
        new_tag=HOSTILE, subject=f"<img src=x onerror=alert(1)> {HOSTILE}")
    html = page([row("failing", git_tag=HOSTILE, error=f"tag {HOSTILE} is broken",
                     how=HOSTILE, env='prod" onmouseover="alert(1)')],
                history={"web": [hostile_history]})
    dom = Dom(html)
    assert dom.named("script") == [] and dom.named("img") == []
    assert all(not k.startswith("on") for _, attrs in dom.tags for k in attrs)
    assert dom.all_text.count(HOSTILE) >= 4  # the tag, how, error, history: all visible
    assert "<img src=x onerror=alert(1)>" in dom.all_text
    assert "<script>" not in html  # escaped in the source itself


def test_a_value_cannot_forge_the_age_placeholder() -> None:
    """Tables are prepared once with NUL-delimited timestamps filled in per request; a NUL in
    a git value must not open such a slot (its content would skip escaping)."""
    forged = "\x00<script>alert(1)</script>\x00"
    dom = Dom(page([row("in-sync", git_tag=forged)]))
    assert dom.named("script") == []
    assert "\ufffd<script>alert(1)</script>\ufffd" in dom.all_text


def test_the_board_prepares_the_table_once_and_reads_fill_in_the_ages() -> None:
    b = board([row("in-sync")])
    snap = asyncio.run(b.refresh())
    assert "\x00" in snap.table and "\x00" not in render_page(snap, now=NOW, reload_seconds=9)
    assert "3 h ago" in render_page(snap, now=NOW, reload_seconds=9)


def test_phone_layout_viewport_and_self_refresh() -> None:
    dom = Dom(page([row("in-sync", "dev"), row("pending", "prod")]))
    metas = dom.named("meta")
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in metas
    assert {"http-equiv": "refresh", "content": "30"} in metas
    assert {"class": "grid"} in dom.named("table")
    assert [a["data-env"] for a in dom.named("td")] == ["dev", "prod"]  # card labels
    html = page([row("in-sync")])
    assert "@media (max-width:700px)" in html and "attr(data-env)" in html


def test_table_is_apps_by_environments_with_empty_cells_where_an_app_has_no_env() -> None:
    dom = Dom(page([row("in-sync", "dev", "api"), row("in-sync", "prod", "api"),
                    row("pending", "dev", "web")]))
    assert [t for t, _ in dom.tags if t == "th"].__len__() == 3 + 2  # header + one per app
    cells = dom.named("td")
    assert [c["data-env"] for c in cells] == ["dev", "prod", "dev", "prod"]
    assert cells[3].get("class") is None  # web has no prod


def test_history_is_listed_under_the_app_on_click() -> None:
    entries = [HistoryEntry(commit=f"{i:040x}", when="2026-11-30T07:00:00+00:00", app="web",
                            env="prod", action="update", by="bot <b@x>", old_digest=A,
                            new_digest=B, new_tag="v2", subject=f"change {i}")
               for i in range(3)]
    dom = Dom(page([row("in-sync")], history={"web": entries}))
    assert len(dom.named("details")) == 1 and len(dom.named("li")) == 3
    assert "5 h ago" in dom.all_text and "change 2" in dom.all_text


def test_first_snapshot_not_computed_yet_and_a_failed_refresh_are_said() -> None:
    first = Dom(render_page(Snapshot(), now=NOW, reload_seconds=5)).all_text
    assert "The first status is being computed" in first
    stale = Dom(page([row("in-sync")], error="the status could not be computed: boom")).all_text
    assert "the status could not be computed: boom" in stale and "v1.2.3" in stale


# ---- routes ----------------------------------------------------------------------------------

def board(rows: Sequence[EnvStatus] = (), *, access: str = "open",
          secrets: SecretRegistry | None = None) -> StatusBoard:
    async def compute() -> Computed:
        return rows, {}

    return StatusBoard(compute=compute, settings=StatusPageSettings(access=access),
                       secrets=secrets or SecretRegistry(), clock=lambda: NOW.timestamp())


class Client:
    """The routes in a Starlette app, called through httpx's ASGI transport (no socket)."""

    def __init__(self, b: StatusBoard, **kw: object) -> None:
        self.board = b
        self.app = Starlette(routes=status_routes(b, **kw))  # type: ignore[arg-type]

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                answer = await c.get(path, headers=headers)
            await self.board.aclose()  # a refresh the read asked for ends with this loop
            return answer

        return asyncio.run(call())


client = Client


def test_page_headers_forbid_scripts_and_allow_only_its_own_style() -> None:
    b = board([row("in-sync")])
    asyncio.run(b.refresh())
    answer = client(b).get("/")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    csp = answer.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp  # so no script at all
    assert f"style-src '{STYLE_HASH}'" in csp
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_api_answers_the_status_json_document_once_computed() -> None:
    rows = [row("in-sync", "dev"), row("held", "prod", hold=HOLD)]
    b = board(rows)
    c = client(b)
    assert c.get("/api/v1/status").status_code == 503  # nothing computed yet
    asyncio.run(b.refresh())
    answer = c.get("/api/v1/status")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    # byte for byte what `status --format json` prints (commands._print_rows)
    assert answer.text == json.dumps([r.as_json() for r in rows], indent=2) + "\n"
    assert answer.headers["x-status-computed-at"] == NOW.isoformat()


def test_secrets_in_errors_are_masked_in_page_and_api() -> None:
    secrets = SecretRegistry()
    secrets.add("hunter2-token")
    b = board([row("failing", error="auth with hunter2-token failed")], secrets=secrets)
    asyncio.run(b.refresh())
    c = client(b)
    assert "hunter2-token" not in c.get("/").text
    assert "hunter2-token" not in c.get("/api/v1/status").text


def test_authenticated_access_asks_authorize_for_both_routes() -> None:
    async def authorize(request: Request) -> Response | None:
        if request.headers.get("authorization") == "Bearer good":
            return None
        return JSONResponse({"error": "no identity"}, status_code=401)

    b = board([row("in-sync")], access="authenticated")
    asyncio.run(b.refresh())
    c = client(b, authorize=authorize)
    for path in ("/", "/api/v1/status"):
        assert c.get(path).status_code == 401
        assert c.get(path, headers={"Authorization": "Bearer good"}).status_code == 200
    # open access never asks
    assert client(board(access="open"), authorize=authorize).get("/").status_code == 200


def test_page_and_api_answers_are_counted_by_route_and_code() -> None:
    metrics = Metrics(CollectorRegistry())
    b = board([row("in-sync")])
    c = client(b, metrics=metrics)
    assert c.get("/api/v1/status").status_code == 503  # nothing computed yet
    asyncio.run(b.refresh())
    c.get("/")
    c.get("/api/v1/status")

    def count(route: str, code: str) -> float | None:
        return metrics.registry.get_sample_value("image_updater_api_requests_total",
                                                 {"route": route, "code": code})

    assert (count("/api/v1/status", "503"), count("/api/v1/status", "200"),
            count("/", "200")) == (1, 1, 1)


def test_authenticated_access_without_identities_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match=r"status_page\.access is 'authenticated'"):
        status_routes(board(access="authenticated"))


def test_authenticated_access_uses_the_promotion_api_identities(tmp_path: Path) -> None:
    token_file = tmp_path / "ci-token"
    token_file.write_text("status-reader-token-5e1f\n")
    api = ApiSettings(tokens=(TokenSettings(name="ci", file=str(token_file),
                                            grant=Grant(apps=("*",), envs=("dev",))),))
    authorize = identity_check(Authenticator(api, secrets=SecretRegistry()))
    assert authorize is not None
    b = board([row("in-sync")], access="authenticated")
    asyncio.run(b.refresh())
    c = client(b, authorize=authorize)
    absent, wrong = c.get("/api/v1/status"), c.get("/", {"Authorization": "Bearer nope"})
    assert absent.status_code == wrong.status_code == 401
    assert absent.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization" in absent.json()["message"]
    good = {"Authorization": "Bearer status-reader-token-5e1f"}
    assert c.get("/api/v1/status", good).status_code == 200
    assert "v1.2.3" in c.get("/", good).text
    # no identities configured: nothing to check against, so the start is refused
    assert identity_check(Authenticator(ApiSettings(), secrets=SecretRegistry())) is None


# ---- the board -------------------------------------------------------------------------------

def test_a_failed_refresh_keeps_the_last_rows_and_says_why() -> None:
    calls: list[int] = []

    async def compute() -> Computed:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("git unreachable")
        return [row("in-sync")], {}

    b = StatusBoard(compute=compute, settings=StatusPageSettings(), secrets=SecretRegistry())
    first = asyncio.run(b.refresh())
    second = asyncio.run(b.refresh())
    assert second.rows == first.rows and second.computed_at == first.computed_at
    assert second.error is not None and "git unreachable" in second.error
    assert b.refreshes == 1


def test_refreshes_never_overlap_and_asks_meanwhile_make_one_more() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    count = 0

    async def compute() -> Computed:
        nonlocal count
        count += 1
        started.set()
        await release.wait()
        return [row("in-sync")], {}

    async def scenario() -> int:
        b = StatusBoard(compute=compute, settings=StatusPageSettings(max_age=0),
                        secrets=SecretRegistry())
        b.request_refresh()
        await started.wait()            # the first refresh is running
        for _ in range(5):              # five cycles end meanwhile: one more refresh
            b.request_refresh()
        release.set()
        await b.settled()
        assert b.refreshes == 2
        await b.aclose()
        return count

    assert asyncio.run(scenario()) == 2


def test_a_reader_asks_for_a_new_snapshot_only_when_none_or_too_old() -> None:
    now = [NOW.timestamp()]

    async def scenario() -> list[int]:
        b = StatusBoard(compute=lambda: asyncio.sleep(0, ([row("in-sync")], {})),
                        settings=StatusPageSettings(max_age=60), secrets=SecretRegistry(),
                        clock=lambda: now[0])
        seen = []
        for step in (0, 30, 31):          # none yet; 30 s old; 61 s old
            now[0] += step
            b.read()
            await b.settled()
            seen.append(b.refreshes)
        await b.aclose()
        return seen

    assert asyncio.run(scenario()) == [1, 1, 2]


def test_cycles_recompute_only_while_someone_reads() -> None:
    now = [NOW.timestamp()]

    async def scenario() -> list[int]:
        b = StatusBoard(compute=lambda: asyncio.sleep(0, ([row("in-sync")], {})),
                        settings=StatusPageSettings(max_age=0), secrets=SecretRegistry(),
                        clock=lambda: now[0])
        seen = []

        async def step(action: str, advance: float = 0) -> None:
            now[0] += advance
            b.cycle_done() if action == "cycle" else b.read()
            await b.settled()
            seen.append(b.refreshes)

        await step("cycle")                       # nobody reads: nothing computed
        await step("read")                        # the first reader asks
        await step("read")                        # fresh: no more work
        await step("cycle", 60)                   # watched: recomputed right away
        await step("cycle", b.WATCHED + 1)        # nobody read for long: only marked stale
        await step("read")                        # the stale mark makes the reader ask
        await b.aclose()
        return seen

    assert asyncio.run(scenario()) == [0, 1, 1, 2, 2, 3]


# ---- settings --------------------------------------------------------------------------------

def test_settings_block_loads_and_bad_values_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("status_page: {access: authenticated, reload_seconds: 10, history: 3}\n"
                    "api: {tokens: [{name: ci, file: /run/ci, apps: ['*'], envs: ['*']}]}\n")
    block = load_settings(path, environ={}).status_page
    assert (block.access, block.reload_seconds, block.history) == ("authenticated", 10, 3)
    assert load_settings(None, environ={}).status_page.access == "open"
    path.write_text("status_page: {access: public, reload_seconds: 0, max_age: -1, "
                    "history: 500}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    text = str(info.value)
    for key in ("settings.yaml:1:15: status_page.access: 'public'",
                "settings.yaml:1:31: status_page.reload_seconds",
                "settings.yaml:1:50: status_page.max_age", "status_page.history"):
        assert key in text
    # validate --config says it, not only the daemon's start: there is nobody to let in
    path.write_text("status_page: {access: authenticated}\n")
    with pytest.raises(ConfigError, match=r"settings.yaml:1:15: status_page.access: "
                                          r"'authenticated' needs identities"):
        load_settings(path, environ={})
    path.write_text("status_page: {acess: open}\n")
    with pytest.raises(ConfigError, match=r"settings.yaml:1:\d+: status_page.acess: unknown"):
        load_settings(path, environ={})
