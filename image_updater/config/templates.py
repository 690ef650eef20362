"""Message templates: the commit subject and body and the pull request title and body, as
teams write them (ticket prefixes, Conventional Commits, handles to mention). Pure text.

Templates are Jinja2, rendered in a sandbox (no attribute access to Python internals) with
``StrictUndefined`` (a misspelt variable is an error, never an empty string) and no HTML
escaping (commit messages and Markdown are not HTML). They are compiled and rendered against
a sample change when the settings are loaded, so a syntax error or an undefined variable is a
configuration error at start, with the template's file and line, never a failed commit.

A template shapes the text only: image-updater appends its trailers (and the pull request's
digest marker) after the rendered text, and drops any line of the rendered text that looks
like one of them, so a template can neither remove nor forge them.

The context of each template is documented in the README ("Templates"); :func:`change_context`
and the ``*_context`` functions below are its single definition.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from image_updater.changes import Change, KeyChange
from image_updater.errors import ConfigError
from image_updater.gitops.credentials import redact_url
from image_updater.gitops.message import (
    Action,
    Source,
    commit_message,
    commit_text,
    previous_digest,
    short_digest,
    strip_trailers,
)

#: the templates a settings file may set, each inline (``name``) or in a file (``name_file``)
TEMPLATE_NAMES = ("commit_subject", "commit_body", "pull_request_title", "pull_request_body")

COMMIT_VARIABLES = ("changes", "action", "source", "repo_url", "default_subject",
                    "default_body")
PULL_REQUEST_VARIABLES = ("app", "env", "change", "changes", "evidence", "base_branch", "url",
                          "supersedes", "default_title", "default_body")


#: a template is a few lines of text; a larger file is refused before it is compiled
MAX_TEMPLATE_CHARS = 64 * 1024
#: what one rendering may produce (forges cap pull request bodies at 65,536 characters)
MAX_RENDERED_CHARS = 60_000

@dataclass(frozen=True)
class Template:
    """One compiled template and where it came from (for error messages)."""

    #: the setting it came from, e.g. ``templates.commit_body_file``
    setting: str
    #: ``file`` for a template file; ``settings.yaml:12:3`` (the key) for an inline one
    origin: str
    inline: bool
    compiled: jinja2.Template
    #: (settings file, its line holding the template's first line): a ``|`` block scalar
    block_start: tuple[str, int] | None = None

    def render(self, context: Mapping[str, Any]) -> str:
        """The rendered text; a failure is a :class:`ConfigError` naming file and line."""
        try:
            text = self.compiled.render(context)
        # A template is code a person wrote: whatever it raises is their configuration's
        # error (undefined variable, sandbox refusal, a bad filter argument, 1/0).
        except Exception as exc:
            raise ConfigError(self._located(_template_line(exc, self.compiled.name), exc)) \
                from exc
        if len(text) > MAX_RENDERED_CHARS:  # a commit message, not a payload
            raise ConfigError(f"{self.origin}: {self.setting} rendered {len(text)} characters, "
                              f"more than the {MAX_RENDERED_CHARS} a commit message or pull "
                              "request may carry; shorten the template.")
        return text

    def _located(self, line: int | None, exc: BaseException) -> str:
        what = (str(exc) or type(exc).__name__).rstrip(".")
        if self.inline and line and self.block_start:
            file, first = self.block_start
            head = (f"{file}:{first + line - 1}: {self.setting} (line {line} of the template): "
                    f"{what}.")
        elif self.inline:
            where = f"line {line} of the template" if line else "the template"
            head = f"{self.origin}: {self.setting}, {where}: {what}."
        else:
            head = f"{self.origin}:{line}: " if line else f"{self.origin}: "
            head += f"{self.setting}: {what}."
        if isinstance(exc, jinja2.UndefinedError):
            names = COMMIT_VARIABLES if "commit" in self.setting else PULL_REQUEST_VARIABLES
            return (f"{head} This template can use {', '.join(names)} (README: Templates); "
                    "fix the name.")
        return f"{head} Fix the template (README: Templates)."


def _template_line(exc: BaseException, name: str | None) -> int | None:
    """The template line an exception was raised at: Jinja rewrites tracebacks so that the
    frames of template code carry the template's name and line."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return exc.lineno
    line = None
    tb: types.TracebackType | None = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == name:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


@dataclass(frozen=True)
class MessageTemplates:
    """The compiled templates of a settings file; each None keeps the built-in text."""

    commit_subject: Template | None = None
    commit_body: Template | None = None
    pull_request_title: Template | None = None
    pull_request_body: Template | None = None

    def commit_message(self, changes: Sequence[Change], *, source: Source = "poll",
                       action: Action = "update", repo_url: str | None = None,
                       evidence: Sequence[Mapping[str, str]] = ()) -> str:
        """:func:`~image_updater.gitops.message.commit_message` with the templates' text."""
        if self.commit_subject is None and self.commit_body is None:
            return commit_message(changes, source=source, action=action, repo_url=repo_url,
                                  evidence=evidence)
        subject, body = commit_text(changes, action=action, repo_url=repo_url)
        context = commit_context(changes, action=action, source=source, repo_url=repo_url,
                                 default_subject=subject, default_body=body)
        if self.commit_subject is not None:
            subject = _subject_line(self.commit_subject, context)
        if self.commit_body is not None:
            body = self.commit_body.render(context)
        return commit_message(changes, source=source, action=action, repo_url=repo_url,
                              subject=subject, body=body, evidence=evidence)

    def title(self, context: Mapping[str, Any]) -> str:
        """The title; ``context`` is :func:`pull_request_context`'s."""
        if self.pull_request_title is None:
            return str(context["default_title"])
        return _subject_line(self.pull_request_title, context)

    def body(self, context: Mapping[str, Any]) -> str:
        """The body before the trailers, without lines that look like them; ``context`` is
        :func:`pull_request_context`'s."""
        if self.pull_request_body is None:
            return str(context["default_body"])
        return strip_trailers(self.pull_request_body.render(context))


NO_TEMPLATES = MessageTemplates()


def _subject_line(template: Template, context: Mapping[str, Any]) -> str:
    # a subject is a line like any other: one that looks like a trailer is not ours to write
    text = " ".join(strip_trailers(template.render(context)).split())
    if not text:
        raise ConfigError(f"{template.origin}: {template.setting} rendered an empty line; a "
                          "commit subject or pull request title needs text.")
    return text


def change_context(change: Change, links: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What a template sees of one change (``changes[i]``, ``change``)."""
    main: KeyChange | None = change.keys[0] if change.keys else None
    return {
        "app": change.app, "env": change.env, "file": change.file, "image": change.image,
        "tag": change.tag, "digest": change.digest, "short_digest": short_digest(change.digest),
        "previous_digest": previous_digest(change),
        "old": main.old if main else None, "new": main.new if main else change.digest,
        "keys": [{"key": k.key, "old": k.old, "new": k.new} for k in change.keys],
        "reason": change.why, "via": change.via, "links": dict(links or {}),
    }


def commit_context(changes: Sequence[Change], *, action: Action, source: Source,
                   repo_url: str | None, default_subject: str, default_body: str
                   ) -> dict[str, Any]:
    return {
        "changes": [change_context(c) for c in changes], "action": action, "source": source,
        "repo_url": redact_url(repo_url) if repo_url else None,
        "default_subject": default_subject, "default_body": default_body,
    }


def pull_request_context(change: Change, *, evidence: Sequence[str], base_branch: str,
                         url: str | None, supersedes: str | None, default_title: str,
                         default_body: str) -> dict[str, Any]:
    links = {"pull_request": url} if url else {}
    one = change_context(change, links)
    return {
        "app": change.app, "env": change.env, "change": one, "changes": [one],
        "evidence": list(evidence), "base_branch": base_branch, "url": url,
        "supersedes": supersedes, "default_title": default_title,
        "default_body": default_body,
    }


# --- compiling ------------------------------------------------------------------------------

#: a change to render every template against at load time (all optional parts present)
SAMPLE_CHANGE = Change(
    app="sample-app", env="staging", file="apps/sample-app/values-staging.yaml",
    image="registry.example.com/team/sample-app", tag="1.4.2", digest="sha256:" + "ab" * 32,
    keys=(KeyChange(key="image.digest", old="sha256:" + "cd" * 32, new="sha256:" + "ab" * 32),),
    why="1.4.2 is the newest tag matching >=1.0 (sample change rendered by validate)")


def sample_contexts() -> dict[str, dict[str, Any]]:
    """The context each template is rendered with at load time, by template name."""
    subject, body = commit_text([SAMPLE_CHANGE])
    commit = commit_context([SAMPLE_CHANGE], action="update", source="poll",
                            repo_url="https://git.example.com/team/deploy.git",
                            default_subject=subject, default_body=body)
    pull = pull_request_context(
        SAMPLE_CHANGE, evidence=["- `dev` runs this digest (`apps/sample-app/values-dev.yaml`)"],
        base_branch="main", url="https://git.example.com/team/deploy/pull/1",
        supersedes=None, default_title="Promote sample-app to staging: 1.4.2",
        default_body="image-updater proposes to update **sample-app** in **staging**.")
    return {"commit_subject": commit, "commit_body": commit, "pull_request_title": pull,
            "pull_request_body": pull}


def render_samples(templates: MessageTemplates) -> dict[str, str]:
    """What the set templates make of :data:`SAMPLE_CHANGE`: the whole commit message and
    the pull request (title, blank line, body), for ``validate`` to show."""
    out = {}
    if templates.commit_subject is not None or templates.commit_body is not None:
        out["commit message"] = templates.commit_message([SAMPLE_CHANGE])
    if templates.pull_request_title is not None or templates.pull_request_body is not None:
        context = sample_contexts()["pull_request_body"]
        out["pull request"] = f"{templates.title(context)}\n\n{templates.body(context)}\n"
    return out


def compile_templates(sources: Mapping[str, str | None], *,
                      origins: Mapping[str, str] | None = None,
                      block_starts: Mapping[str, tuple[str, int]] | None = None,
                      read: Callable[[str], str] | None = None) -> MessageTemplates:
    """Compile the templates a settings ``templates`` block names and render each against
    :data:`SAMPLE_CHANGE`, so every error is found now.

    ``sources`` maps ``commit_body`` to inline text and ``commit_body_file`` to a path;
    ``origins`` maps those keys to where they are in the settings file, ``block_starts`` the
    inline templates written as block scalars to their first line (for messages).
    """
    origins = origins or {}
    read = read or _read_file
    texts: dict[str, str] = {}
    found: dict[str, tuple[str, str, bool]] = {}  # name -> (setting, origin, inline)
    starts = block_starts or {}
    for name in TEMPLATE_NAMES:
        inline, path = sources.get(name), sources.get(f"{name}_file")
        if inline is not None and path is not None:
            raise ConfigError(f"{origins.get(name, 'settings')}: templates.{name} and "
                              f"templates.{name}_file are both set; keep one of them.")
        if inline is not None:
            if len(inline) > MAX_TEMPLATE_CHARS:
                raise ConfigError(f"{origins.get(name, 'settings')}: templates.{name} is longer "
                                  f"than {MAX_TEMPLATE_CHARS} characters; a message template "
                                  "is a few lines.")
            texts[name] = inline
            found[name] = (f"templates.{name}", origins.get(name, "settings"), True)
        elif path is not None:
            texts[name] = read(path)
            found[name] = (f"templates.{name}_file", path, False)
    env = _environment(texts)
    compiled: dict[str, Template] = {}
    samples = sample_contexts()
    for name, (setting, origin, is_inline) in found.items():
        try:
            jinja_template = env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(Template(setting, origin, is_inline, env.from_string(""),
                                       starts.get(name))._located(exc.lineno, exc)) from exc
        template = Template(setting, origin, is_inline, jinja_template, starts.get(name))
        if name.endswith(("subject", "title")):
            _subject_line(template, samples[name])
        else:
            template.render(samples[name])
        compiled[name] = template
    return MessageTemplates(**compiled)


class _BoundedEnvironment(SandboxedEnvironment):
    """The sandbox, with ``*`` and ``**`` unable to build huge values (``'x' * 10**9``)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        sizes = [len(v) for v in (left, right) if isinstance(v, str | list | tuple)]
        counts = [v for v in (left, right) if isinstance(v, int) and not isinstance(v, bool)]
        if operator == "*" and sizes and counts and sizes[0] * max(counts) > MAX_RENDERED_CHARS:
            raise SecurityError(f"a repetition of more than {MAX_RENDERED_CHARS} characters")
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise SecurityError("a power with an exponent over 64")
        return super().call_binop(context, operator, left, right)


def _environment(texts: Mapping[str, str]) -> SandboxedEnvironment:
    # The loader names each template after itself, so Jinja's rewritten traceback frames
    # carry that name and the template's line (see _template_line).
    return _BoundedEnvironment(
        loader=jinja2.FunctionLoader(lambda name: (texts[name], name, lambda: True)),
        undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=True,
        lstrip_blocks=True, keep_trailing_newline=False)


def _read_file(path: str) -> str:
    try:
        with Path(path).open(encoding="utf-8") as f:
            text = f.read(MAX_TEMPLATE_CHARS + 1)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read template file {path}: {exc}. Check the path in the "
                          "settings' templates block (relative paths are from the working "
                          "directory).") from exc
    if len(text) > MAX_TEMPLATE_CHARS:
        raise ConfigError(f"template file {path} is larger than {MAX_TEMPLATE_CHARS} characters; "
                          "a message template is a few lines, so it is not read.")
    return text
