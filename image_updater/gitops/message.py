"""Commit messages built from the cycle's changes, and their trailers read back. Pure text.

The trailer block at the end of every message makes the deploy history reconstructable from
git alone (``git log --format='%(trailers)'``): one group per change, always in this order::

    Image-Updater-App: application-x
    Image-Updater-Env: dev
    Image-Updater-Image: registry.example.com/team/application-x
    Image-Updater-Tag: dev                      (only when the change has a tag)
    Image-Updater-Digest: sha256:…
    Image-Updater-Previous-Digest: sha256:…     (when the file held a digest before)
    Image-Updater-Action: update                (update, promote, rollback, hold, release)
    Image-Updater-Source: poll                  (poll, webhook, promotion, person)
    Image-Updater-By: alice@example.com         (a person's commands: who)
    Image-Updater-Reason: incident 4711         (hold, rollback: why)

A hold or release changes no image: its group has App, Env, Action, Source, By and Reason.

A change a promotion asked for (``POST /api/v1/promotions``) has ``Source: promotion`` and
ends its group with ``Image-Updater-Evidence: KEY=VALUE`` lines: what the caller vouched with
(an Argo CD sync revision, a Job name, a test report URL), see :func:`trailer_block`. A pull
request's body ends with the same block as its commit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal

from image_updater.changes import Change
from image_updater.errors import ImageUpdaterError
from image_updater.gitops.credentials import redact_url
from image_updater.registry.base import check_digest, check_tag

SUBJECT_PREFIX = "image-updater: "
#: git tools show about this much of a subject; longer lists of changes end in "…"
SUBJECT_LIMIT = 72
SHORT_DIGEST_HEX = 8

TRAILER_PREFIX = "Image-Updater-"
#: trailer suffix → key in the dicts of :func:`parse_trailers`, in writing order
TRAILER_FIELDS: tuple[tuple[str, str], ...] = (
    ("App", "app"), ("Env", "env"), ("Image", "image"), ("Tag", "tag"), ("Digest", "digest"),
    ("Previous-Digest", "previous_digest"), ("Action", "action"), ("Source", "source"),
    ("By", "by"), ("Reason", "reason"),
)
Action = Literal["update", "promote", "rollback", "hold", "release"]
Source = Literal["poll", "webhook", "promotion", "person"]

#: control characters (C0, DEL, C1), line and paragraph separators, and lone surrogates:
#: a surrogate cannot be encoded as UTF-8, so the commit carrying it would fail every cycle
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+")

EVIDENCE_TRAILER = f"{TRAILER_PREFIX}Evidence"
#: evidence bounds: entries per change, key pattern, value length (characters)
MAX_EVIDENCE_ITEMS = 16
MAX_EVIDENCE_VALUE = 256
EVIDENCE_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")


def commit_message(changes: Sequence[Change], *, repo_url: str | None = None,
                   action: Action = "update", source: Source = "poll",
                   by: str | None = None, reason: str | None = None,
                   subject: str | None = None, body: str | None = None,
                   evidence: Sequence[Mapping[str, str]] = ()) -> str:
    """Subject, one body paragraph per change, then the trailer block.

    ``action`` and ``source`` say what kind of change this is and what started it; ``by``
    and ``reason`` (a person's commands) who and why. They go into every change's group.

    ``subject`` and ``body`` replace the built-in text (a rendered template): the subject
    becomes one line, and every line of the body that looks like one of our trailers is
    dropped, so the trailer block is always exactly ours and always last.

    Tags and digests come from registries, so they are validated here once more: a tag with a
    newline in it must never be able to forge a trailer line.
    """
    if not changes:
        raise ValueError("commit_message() needs at least one change; no change means no commit.")
    for change in changes:
        _check(change)
    default_subject, default_body = commit_text(changes, repo_url=repo_url, action=action,
                                                by=by, reason=reason)
    head = _one_line(subject) if subject is not None else default_subject
    text = strip_trailers(body) if body is not None else default_body
    trailers = trailer_block(changes, action=action, source=source, by=by, reason=reason,
                             evidence=evidence)
    return "\n\n".join(p for p in (head, text, trailers) if p) + "\n"


def commit_text(changes: Sequence[Change], *, repo_url: str | None = None,
                action: Action = "update", by: str | None = None,
                reason: str | None = None) -> tuple[str, str]:
    """The built-in subject and body (without trailers) of :func:`commit_message`."""
    paragraphs = [_describe(c) for c in changes]
    if by or reason:
        paragraphs.append(_who(action, by, reason))
    if repo_url:
        paragraphs.append(f"Deploy repository: {_one_line(redact_url(repo_url))}")
    return _subject(changes, action), "\n\n".join(paragraphs)


#: a line a template wrote that git or image-updater could read as one of our trailers or
#: markers (anywhere in the line: pull request bodies are searched for them as substrings)
_FORGED_RE = re.compile(r"image-updater-[a-z0-9-]*\s*:|<!--\s*image-updater-", re.IGNORECASE)
_CONTROL_BUT_NEWLINE_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]+")


def strip_trailers(text: str) -> str:
    """``text`` (a template's output) without the lines that look like our trailers or
    markers, without control characters other than newlines and tabs, and trimmed."""
    text = _CONTROL_BUT_NEWLINE_RE.sub(" ", text.replace("\r\n", "\n"))
    return "\n".join(line.rstrip() for line in text.splitlines()
                     if not _FORGED_RE.search(line)).strip("\n")


def trailer_block(changes: Sequence[Change], *, action: Action = "update",
                  source: Source = "poll", by: str | None = None, reason: str | None = None,
                  evidence: Sequence[Mapping[str, str]] = ()) -> str:
    """The trailer lines of ``changes``, as :func:`commit_message` ends with them.

    ``evidence[i]`` is what a promotion's caller vouched for the ``i``-th change with (the
    daemon's promotion API): its lines end that change's group, and its ``Source`` is
    ``promotion``, whatever started the cycle that lands it.
    """
    lines: list[str] = []
    for i, change in enumerate(changes):
        vouched = evidence[i] if i < len(evidence) else {}
        extra = {"action": action, "source": "promotion" if vouched else source, "by": by,
                 "reason": reason}
        lines += _trailers(change, extra) + evidence_lines(vouched)
    return "\n".join(lines)


def control_message(action: Action, app: str, env: str, *, by: str, reason: str,
                    detail: str = "") -> str:
    """The message of a commit that changes no image: a hold placed or released.

    ``detail`` is one more body paragraph (what the hold was, for a release).
    """
    verb = {"hold": "hold", "release": "release"}.get(action, action)
    subject = f"{SUBJECT_PREFIX}{verb} {_one_line(app)} {_one_line(env)}"
    paragraphs = [subject, _who(action, by, reason)]
    if detail:
        paragraphs.append(_one_line(detail))
    values = {"app": app, "env": env, "action": action, "source": "person", "by": by,
              "reason": reason}
    paragraphs.append("\n".join(_trailer_lines(values)))
    return "\n\n".join(paragraphs) + "\n"


def parse_trailers(message: str) -> list[dict[str, str]]:
    """The image-updater trailer groups of ``message``, one dict per change, in order.

    Only the last paragraph is read, as git does; trailers of other tools are ignored.
    """
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", message.strip()) if p.strip()]
    if not paragraphs:
        return []
    names = {f"{TRAILER_PREFIX}{suffix}".lower(): key for suffix, key in TRAILER_FIELDS}
    groups: list[dict[str, str]] = []
    for line in paragraphs[-1].splitlines():
        name, sep, value = line.partition(":")
        key = names.get(name.strip().lower())
        if not sep or key is None:
            continue
        # a new group starts at each App trailer, or when a field repeats within the group
        if key == "app" or not groups or key in groups[-1]:
            groups.append({})
        groups[-1][key] = value.strip()
    return groups


def short_digest(digest: str) -> str:
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}:{hex_part[:SHORT_DIGEST_HEX]}…"


def _check(change: Change) -> None:
    check_digest(change.digest, what=f"the digest of {change.app} {change.env}")
    if change.tag is not None:
        check_tag(change.tag, what=f"the tag of {change.app} {change.env}")


def _subject(changes: Sequence[Change], action: Action = "update") -> str:
    if len(changes) == 1:
        c = changes[0]
        verb = "" if action == "update" else f"{action} "
        return (f"{SUBJECT_PREFIX}{verb}{_one_line(c.app)} {_one_line(c.env)} → "
                f"{short_digest(c.digest)}")
    head = f"{SUBJECT_PREFIX}{len(changes)} updates ("
    names = [f"{_one_line(c.app)} {_one_line(c.env)}" for c in changes]
    shown: list[str] = []
    for i, name in enumerate(names):
        more = i + 1 < len(names)
        candidate = ", ".join([*shown, name]) + (", …" if more else "")
        if shown and len(head) + len(candidate) + 1 > SUBJECT_LIMIT:
            return head + ", ".join([*shown, "…"]) + ")"
        shown.append(name)
    return head + ", ".join(shown) + ")"


def _describe(change: Change) -> str:
    image = _one_line(change.image)
    tag = f":{change.tag}" if change.tag else ""
    reference = f"{image}{tag}@{change.digest}"
    lines = [
        f"{_one_line(change.app)} {_one_line(change.env)} in {_one_line(change.file)}:",
        f"  image: {reference}",
    ]
    for key in change.keys:
        old = _one_line(key.old) if key.old is not None else "(unset)"
        lines.append(f"  {_one_line(key.key)}: {old} → {_one_line(key.new)}")
    lines.append(f"  why: {_one_line(change.why)}")
    return "\n".join(lines)


def _who(action: str, by: str | None, reason: str | None) -> str:
    lines = [f"{action} by {_one_line(by or 'unknown')}"]
    if reason:
        lines.append(f"reason: {_one_line(reason)}")
    return "\n".join(lines)


def _trailers(change: Change, extra: dict[str, str | None]) -> list[str]:
    values = {"app": change.app, "env": change.env, "image": change.image,
              "tag": change.tag, "digest": change.digest,
              "previous_digest": previous_digest(change), **extra}
    return _trailer_lines(values)


def _trailer_lines(values: Mapping[str, str | None]) -> list[str]:
    return [f"{TRAILER_PREFIX}{suffix}: {_one_line(value)}"
            for suffix, key in TRAILER_FIELDS
            if (value := values.get(key)) and _one_line(value)]


def previous_digest(change: Change) -> str | None:
    """The digest the values file held before ``change``: the old value of the key that
    receives the digest (or the digest part of a ``tag@digest`` reference). None when it
    held none, or something that is not a well-formed digest (a hand edit)."""
    for key in change.keys:
        if key.old is None:
            continue
        if key.new == change.digest:
            old = key.old
        elif key.new.endswith("@" + change.digest):
            old = key.old.rpartition("@")[2]
        else:
            continue
        try:
            return check_digest(old)
        except ImageUpdaterError:
            return None
    return None


def _one_line(text: str) -> str:
    """Control characters (newlines above all) become spaces: one value, one line."""
    return " ".join(_CONTROL_RE.sub(" ", text).split())


# -- evidence ----------------------------------------------------------------------------------


def evidence_problem(key: object, value: object) -> str | None:
    """Why ``key: value`` cannot be evidence, or None: the one rule for the API and here."""
    if not isinstance(key, str) or not EVIDENCE_KEY_RE.fullmatch(key):
        return (f"evidence key {str(key)[:70]!r} must be 1-63 letters, digits, '.', '_', '/' "
                "or '-', starting with a letter or digit")
    if not isinstance(value, str):
        return f"evidence {key}: the value must be a string"
    if len(value) > MAX_EVIDENCE_VALUE or _CONTROL_RE.search(value):
        return (f"evidence {key}: the value must be one line of at most "
                f"{MAX_EVIDENCE_VALUE} characters, without control characters or unpaired "
                "surrogates")
    return None


def evidence_lines(evidence: Mapping[str, str]) -> list[str]:
    """The trailer lines of one change's evidence; anything :func:`evidence_problem`
    refuses is left out (the API refused it already: this is the last line of defence)."""
    items = [(k, v) for k, v in sorted(evidence.items()) if evidence_problem(k, v) is None]
    return [f"{EVIDENCE_TRAILER}: {k}={_one_line(v)}" for k, v in items[:MAX_EVIDENCE_ITEMS]
            if _one_line(v)]


