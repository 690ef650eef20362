"""Holds: environments a person stopped, stored in the deploy repository itself.

A hold lives in ``.image-updater/holds.yaml`` at the root of the deploy branch, so it is
reviewed, audited, survives restarts and is seen by every replica, like every other change::

    # written by image-updater hold / release / rollback
    application-x:
      prod:
        kind: rollback            # hold | rollback
        by: alice@example.com
        reason: incident 4711, checkout 500s
        since: "2026-11-29T23:00:00Z"
        digest: sha256:…          # rollback: the digest rolled back to
        forced:                   # promotions forced past the hold (promote --force)
          - "2026-11-30T01:00:00Z bob: promoted sha256:… to :prod"

Pure: text in, values out, text back. The file is untrusted input (anyone with push access
writes it): every problem is a :class:`~image_updater.errors.ConfigError` naming the file,
the entry and how to fix it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from image_updater.errors import ConfigError, ImageUpdaterError
from image_updater.registry.reference import check_digest

HOLDS_FILE = ".image-updater/holds.yaml"
#: a holds file larger than this is refused before parsing
MAX_HOLDS_BYTES = 256 * 1024
MAX_TEXT = 500  # characters of ``by`` / ``reason`` kept
MAX_FORCED = 50  # notes of forced promotions kept per hold (the newest)

HoldKind = Literal["hold", "rollback"]
_HEADER = ("# Holds placed by image-updater hold / rollback; removed by release.\n"
           "# A held environment is left alone by the daemon. Edit with the commands, so the\n"
           "# commits carry image-updater's trailers.\n")


@dataclass(frozen=True, kw_only=True)
class Hold:
    app: str
    env: str
    kind: HoldKind
    by: str
    reason: str
    since: str              # ISO 8601 UTC, as written
    digest: str | None = None  # rollback: the digest rolled back to
    #: one line per promotion forced past this hold (``promote --force``), oldest first
    forced: tuple[str, ...] = ()

    def describe(self) -> str:
        what = "rolled back" if self.kind == "rollback" else "held"
        return f"{self.app}/{self.env} is {what} by {self.by} since {self.since}: {self.reason}"


@dataclass(frozen=True)
class Holds:
    """All holds of one deploy branch; immutable (``place``/``release`` return new ones)."""

    entries: Mapping[tuple[str, str], Hold]

    @classmethod
    def empty(cls) -> Holds:
        return cls({})

    def get(self, app: str, env: str) -> Hold | None:
        return self.entries.get((app, env))

    def __iter__(self) -> Iterator[Hold]:
        return iter(sorted(self.entries.values(), key=lambda h: (h.app, h.env)))

    def __len__(self) -> int:
        return len(self.entries)

    def place(self, hold: Hold) -> Holds:
        current = self.get(hold.app, hold.env)
        if current is not None:
            raise ConfigError(
                f"{current.describe()}; it is already held. Release it first "
                f"(image-updater release {hold.app} {hold.env}) to place another hold. "
                "Nothing was written.")
        return Holds({**self.entries, (hold.app, hold.env): _clean(hold)})

    def release(self, app: str, env: str) -> tuple[Holds, Hold]:
        current = self.get(app, env)
        if current is None:
            raise ConfigError(
                f"{app}/{env} is not held (no entry in {HOLDS_FILE}); nothing to release. "
                "Nothing was written.")
        rest = {k: v for k, v in self.entries.items() if k != (app, env)}
        return Holds(rest), current

    def note_forced(self, app: str, env: str, note: str) -> Holds:
        """Record a promotion forced past the hold on ``app``/``env`` (which must exist)."""
        current = self.get(app, env)
        if current is None:
            raise ConfigError(f"{app}/{env} is not held (no entry in {HOLDS_FILE}); a forced "
                              "promotion has nothing to be recorded on.")
        forced = (*current.forced, note)[-MAX_FORCED:]
        return Holds({**self.entries, (app, env): _clean(replace(current, forced=forced))})


def parse_holds(text: str | None, *, file: str = HOLDS_FILE) -> Holds:
    """The holds in ``text`` (None or empty: no holds)."""
    if text is None or not text.strip():
        return Holds.empty()
    if len(text) > MAX_HOLDS_BYTES:
        raise ConfigError(f"{file} is larger than {MAX_HOLDS_BYTES} bytes; it is not read. "
                          "Remove stale entries (image-updater release APP ENV).")
    if "\x00" in text:
        raise ConfigError(f"{file} contains a NUL byte; it is not YAML. Restore it from git "
                          "history or delete it to release every hold.")
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except (YAMLError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{_where_in(file, exc)} is not valid YAML ({_problem(exc)}); fix "
                          "it, or restore it from git history.") from exc
    if data is None:
        return Holds.empty()
    if not isinstance(data, dict):
        raise ConfigError(f"{file} must map app names to environments to holds; found "
                          f"{type(data).__name__}.")
    entries: dict[tuple[str, str], Hold] = {}
    for app, envs in data.items():
        if not isinstance(app, str) or not isinstance(envs, dict):
            raise ConfigError(f"{file}: entry {str(app)[:80]!r} must be an app name mapping "
                              "environment names to holds.")
        for env, body in envs.items():
            entries[(app, str(env))] = _hold(file, app, env, body)
    return Holds(entries)


def render_holds(holds: Holds) -> str:
    """The file text for ``holds``: sorted, so the same holds always give the same bytes."""
    if not len(holds):
        return _HEADER + "{}\n"
    tree: dict[str, dict[str, dict[str, str | list[str]]]] = {}
    for h in holds:
        body: dict[str, str | list[str]] = {"kind": h.kind, "by": h.by, "reason": h.reason,
                                            "since": h.since}
        if h.digest:
            body["digest"] = h.digest
        if h.forced:
            body["forced"] = list(h.forced)
        tree.setdefault(h.app, {})[h.env] = body
    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.width = 4096  # a digest stays on its line
    yaml.dump(tree, out)
    return _HEADER + out.getvalue()


def _hold(file: str, app: str, env: Any, body: Any) -> Hold:
    where = f"{file}: {app}.{str(env)[:80]}"
    if not isinstance(env, str) or not isinstance(body, dict):
        raise ConfigError(f"{where} must be an environment name mapping to a hold "
                          "(kind, by, reason, since).")
    kind = body.get("kind", "hold")
    if kind not in ("hold", "rollback"):
        raise ConfigError(f"{where}: kind {str(kind)[:40]!r} is neither 'hold' nor 'rollback'.")
    fields: dict[str, str] = {}
    for name in ("by", "reason", "since"):
        value = body.get(name, "")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be text.")
        fields[name] = str(value).strip()
    digest = body.get("digest")
    if digest is not None:
        try:
            digest = check_digest(digest, what=f"{where}: digest")
        except ImageUpdaterError as exc:
            raise ConfigError(str(exc)) from exc
    forced = body.get("forced") or []
    if not isinstance(forced, list) or not all(isinstance(f, str) for f in forced):
        raise ConfigError(f"{where}: forced must be a list of text lines.")
    if not fields["by"] or not fields["since"]:
        raise ConfigError(f"{where}: a hold says who placed it ('by') and when ('since', ISO "
                          "8601); place holds with image-updater hold, which writes both.")
    return _clean(Hold(app=app, env=env, kind=kind, digest=digest, forced=tuple(forced),
                       **fields))


def _where_in(file: str, exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    line, column = getattr(mark, "line", None), getattr(mark, "column", None)
    return f"{file}:{line + 1}:{column + 1}" if isinstance(line, int) and \
        isinstance(column, int) else file


def _problem(exc: Exception) -> str:
    """The parser's one-line reason, without its quoted excerpt of the file."""
    problem = " ".join(str(getattr(exc, "problem", None) or str(exc).splitlines()[0]).split())
    if problem.startswith("found duplicate key"):  # its quoted values are not the file's
        problem = problem.split(" with value", 1)[0]
    return problem[:160]


def _clean(hold: Hold) -> Hold:
    """One line of printable text each: these end up in logs, tables and commit trailers."""
    def tidy(text: str) -> str:
        return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:MAX_TEXT]

    return replace(hold, by=tidy(hold.by) or "unknown", reason=tidy(hold.reason),
                   since=tidy(hold.since),
                   forced=tuple(tidy(f) for f in hold.forced[-MAX_FORCED:]))

