"""The status page's HTML (pure): a snapshot and the time in, one document out.

Everything that came from a registry, git or a forge (tags, digests, authors, subjects,
errors, pull request URLs) is untrusted: it goes through :func:`_e` (``html.escape``, quotes
too) and a URL becomes a link only when it is http(s). The page has no script; it reloads
itself with ``<meta http-equiv="refresh">``. On a narrow screen the table becomes one card
per app (CSS only, ``.grid`` below ``@media``), each cell labelled with its environment.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import get_args
from urllib.parse import urlsplit

from image_updater.engine.status import EnvStatus, State
from image_updater.gitops.history import HistoryEntry

#: the states the engine knows today; any other one is rendered generically (``state-other``)
KNOWN_STATES: frozenset[str] = frozenset(get_args(State)) | {"unverified"}


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """What the page and the API show until the next refresh."""

    rows: tuple[EnvStatus, ...] = ()
    history: Mapping[str, Sequence[HistoryEntry]] = field(default_factory=dict)
    computed_at: datetime | None = None   # None: the first one is being computed
    took: float = 0.0                     # seconds the computation took
    body: bytes = b""                     # /api/v1/status: encoded once per snapshot
    error: str | None = None              # the last refresh failed; these rows are older
    table: str = ""                       # prepare_table(rows, history), made once


STYLE = """
:root{color-scheme:light dark;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--info:#0969da;
--mute:#6e7781;--line:#d0d7de}
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;padding:1rem;max-width:110rem}
h1{font-size:1.3rem;margin:0 0 .3rem}
.meta{color:var(--mute);margin:0 0 1rem}.stale{color:var(--bad)}
table.grid{border-collapse:collapse;width:100%}
.grid th,.grid td{border:1px solid var(--line);padding:.4rem;vertical-align:top;text-align:left}
.grid th{position:sticky;top:0;background:Canvas}
summary{white-space:nowrap;cursor:pointer}
.state{display:inline-block;font-weight:600;border-radius:.8rem;padding:0 .5rem;
border:1px solid currentColor}
.state-in-sync .state{color:var(--ok)}
.state-pending .state,.state-waiting .state,.state-awaiting-approval .state{color:var(--info)}
.state-held .state,.state-rolled-back .state,.state-unverified .state{color:var(--warn)}
.state-drifted .state,.state-failing .state{color:var(--bad)}
.state-other .state{color:var(--mute)}
code{font-size:.9em}.tag{font-weight:600;overflow-wrap:anywhere}
.ago,.note{color:var(--mute)}.note{font-size:.9em;overflow-wrap:anywhere}
.error{color:var(--bad);font-size:.9em;overflow-wrap:anywhere}
details ol{margin:.3rem 0;padding-left:1.2rem;font-size:.9em}
@media (max-width:700px){
table.grid,.grid tbody,.grid tr,.grid td,.grid th{display:block;width:auto}
.grid thead{display:none}
.grid tr{border:1px solid var(--line);margin:0 0 .8rem;border-radius:.3rem}
.grid td{border:0;border-top:1px solid var(--line)}
.grid td[data-env]::before{content:attr(data-env);display:block;font-size:.8em;
color:var(--mute);text-transform:uppercase}
}
"""
#: delimits a timestamp in a prepared table (NUL: browsers show none, so none is lost)
_MARK = "\x00"
#: the Content-Security-Policy source that allows exactly this stylesheet
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()


def prepare_table(rows: Sequence[EnvStatus],
                  history: Mapping[str, Sequence[HistoryEntry]]) -> str:
    """The apps-by-environments table with each app's recent changes, rendered once per
    snapshot; only its "how long ago" marks are filled in per request (:func:`render_page`)."""
    envs = _env_columns(rows)
    head = "".join(f"<th scope=col>{_e(env)}</th>" for env in envs)
    body = "\n".join(_app_row(app, cells, envs, history.get(app, ()))
                     for app, cells in _by_app(rows).items())
    return (f'<table class=grid><thead><tr><th scope=col>app</th>{head}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody></table>")


def render_page(snap: Snapshot, *, now: datetime, reload_seconds: int) -> str:
    """The whole page: header, the table (prepared with the snapshot), times relative to now."""
    table = snap.table or prepare_table(snap.rows, snap.history)
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f'<meta http-equiv=refresh content="{int(reload_seconds)}">'
        f"<title>image-updater: status</title><style>{STYLE}</style></head>\n<body>"
        f"<h1>What runs where</h1>{_meta(snap, now)}\n"
        f"{_fill_ages(table, now)}\n</body></html>\n")


def _fill_ages(table: str, now: datetime) -> str:
    """Replace each ``_MARK``-delimited timestamp with how long ago it was. No value can
    forge a mark: :func:`_e` replaces the mark character in everything it escapes."""
    parts = table.split(_MARK)
    seen: dict[str, str] = {}
    for i in range(1, len(parts), 2):
        iso = parts[i]
        if iso not in seen:
            seen[iso] = _ago_text(iso, now)
        parts[i] = seen[iso]
    return "".join(parts)


def _meta(snap: Snapshot, now: datetime) -> str:
    if snap.computed_at is None:
        text = "The first status is being computed; this page reloads itself."
    else:
        text = (f"{len(snap.rows)} environment(s). Computed {_ago(snap.computed_at, now)} at "
                f"{snap.computed_at.strftime('%Y-%m-%d %H:%M:%S UTC')} (took {snap.took:.1f} s)"
                "; recomputed after every cycle.")
    stale = f'<p class="meta stale">{_e(snap.error)}</p>' if snap.error else ""
    return f"<p class=meta>{_e(text)}</p>{stale}"


def _env_columns(rows: Sequence[EnvStatus]) -> list[str]:
    """Environment names in the order apps list them (dev before prod), each once."""
    return list(dict.fromkeys(r.env for r in rows))


def _by_app(rows: Sequence[EnvStatus]) -> dict[str, dict[str, EnvStatus]]:
    out: dict[str, dict[str, EnvStatus]] = {}
    for r in rows:
        out.setdefault(r.app, {})[r.env] = r
    return out


def _app_row(app: str, cells: dict[str, EnvStatus], envs: Sequence[str],
             history: Sequence[HistoryEntry]) -> str:
    tds = "".join(_cell(cells[env]) if env in cells else f"<td data-env={_q(env)}></td>"
                  for env in envs)
    return f"<tr><th scope=row>{_app_cell(app, history)}</th>{tds}</tr>"


def _app_cell(app: str, history: Sequence[HistoryEntry]) -> str:
    if not history:
        return f"<span class=app>{_e(app)}</span>"
    items = "".join(f"<li>{_history_item(e)}</li>" for e in history)
    return (f"<details><summary class=app>{_e(app)}</summary>"
            f"<ol class=history>{items}</ol></details>")


def _history_item(e: HistoryEntry) -> str:
    change = f"{_short(e.old_digest)} → {_short(e.new_digest)}"
    if e.new_tag:
        change += f" ({e.new_tag})"
    if e.action in ("hold", "release") and not e.new_digest:
        change = ""
    return (f"<span class=ago title={_q(e.when)}>{_age_mark(e.when)}</span> "
            f"{_e(e.env)}: <b>{_e(e.how)}</b> {_e(change)} <code>{_e(e.commit[:8])}</code> "
            f"<span class=note>{_e(e.subject)}</span>")


def _cell(r: EnvStatus) -> str:
    state_class = f"state-{r.state}" if r.state in KNOWN_STATES else "state-other"
    parts = [f"<span class=state>{_e(r.state)}</span>"]
    if r.git_digest:
        parts.append(f"<code class=digest title={_q(r.git_digest)}>{_e(_short(r.git_digest))}"
                     "</code>")
    if r.git_tag:
        parts.append(f"<span class=tag>{_e(r.git_tag)}</span>")
    if r.since:
        parts.append(f"<span class=ago title={_q(r.since)}>{_age_mark(r.since)}"
                     + (f" · {_e(r.how)}" if r.how else "") + "</span>")
    parts += _notes(r)
    return f"<td class={_q('cell ' + state_class)} data-env={_q(r.env)}>{' '.join(parts)}</td>"


def _notes(r: EnvStatus) -> list[str]:
    out = []
    if r.pull_request:
        out.append(f"<div class=note>{_link(r.pull_request, 'pull request')}</div>")
    if r.hold is not None:
        out.append(f"<div class=note>{_e(r.hold.kind)} by {_e(r.hold.by)}: "
                   f"{_e(r.hold.reason)}</div>")
    if r.state == "waiting":
        out.append(f"<div class=note>tag {_e(r.wanted_tag or '?')} does not exist yet</div>")
    elif r.wanted_digest and r.wanted_digest != r.git_digest:
        out.append(f"<div class=note>registry: {_e(r.wanted_tag or '?')} → "
                   f"{_e(_short(r.wanted_digest))}</div>")
    if r.error:
        text = r.error if len(r.error) <= 400 else r.error[:399] + "…"
        out.append(f"<div class=error>{_e(text)}</div>")
    return out


def _link(url: str, label: str) -> str:
    """A link only to http(s) (never ``javascript:``/``data:``); anything else is text."""
    try:
        parts = urlsplit(url)
    except ValueError:  # "https://[host": one forge's bad URL must not fail the whole page
        return _e(url)
    if parts.scheme.lower() in ("http", "https") and parts.netloc:
        return f"<a href={_q(url)} rel=\"noopener noreferrer\">{_e(label)}</a>"
    return _e(url)


def _short(digest: str | None) -> str:
    return digest.partition(":")[2][:12] if digest else "-"


def _age_mark(iso: str) -> str:
    """A placeholder for "how long ago" ``iso`` was, filled in per request."""
    return f"{_MARK}{_e(iso)}{_MARK}"


def _ago_text(iso: str, now: datetime) -> str:
    """How long before ``now`` the (escaped) ``iso`` time was; unparsable: as it is."""
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if when.tzinfo is None or now.tzinfo is None:
        return iso
    return _ago(when, now)


def _ago(when: datetime, now: datetime) -> str:
    seconds = int((now - when).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _e(text: str) -> str:
    """Escaped for HTML text and attributes; the age mark cannot pass (see _fill_ages)."""
    return escape(text.replace(_MARK, "\ufffd"), quote=True)


def _q(text: str) -> str:
    """An attribute value, quoted and escaped."""
    return f'"{escape(text, quote=True)}"'
