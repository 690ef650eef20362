"""Log setup: readable text for terminals, JSON lines for clusters, secrets always masked.

``configure_logging`` installs one handler on a logger (the root logger by default) with a
:class:`RedactionFilter` in front of the formatter, so every record that reaches the output,
whatever library logged it, is masked first. What gets masked:

- the exact values held by a :class:`SecretRegistry` (credential loaders ``add()`` to it);
- ``Authorization:``/``Proxy-Authorization:`` header values, scheme included;
- ``password=``, ``token=``, ``secret=``, ``api_key=`` … in query strings, key-value text,
  dict reprs and JSON;
- userinfo in URLs (``https://user:pass@host`` becomes ``https://***@host``);
- JWT-looking strings and well-known token formats (GitHub, GitLab, AWS access key ids).

There is no module-level secret registry: the CLI builds one (see ``image_updater.secrets``),
hands it to ``configure_logging``, to :func:`scrub` and, through the runtime, to every
credential source, so tests and embedders each get their own.

Structured fields go through ``extra=``::

    log.info("committed %s (next cycle in %d s)", digest, 120,
             extra={"app": "application-x", "env": "dev"})
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any, Literal

from image_updater.errors import ConfigError
from image_updater.secrets import MASK, SecretRegistry

__all__ = [  # SecretRegistry lives in image_updater.secrets; re-exported for log users
    "FORMATS", "MASK", "JsonFormatter", "LogFormat", "RedactionFilter", "SecretRegistry",
    "TextFormatter", "Throttle", "configure_logging", "extra_fields", "redact", "scrub",
]

LogFormat = Literal["text", "json"]
FORMATS: tuple[str, ...] = ("text", "json")

#: structured fields, in the order the text format prints them; unknown extras follow sorted
FIELD_ORDER: tuple[str, ...] = (
    "app", "env", "image", "registry", "tag", "digest", "file", "source", "reason", "attempt",
)

#: libraries that log every HTTP request at INFO; one line per registry call is noise in a
#: daemon that polls, so they are raised to WARNING unless DEBUG was asked for
NOISY_LOGGERS: tuple[str, ...] = ("httpx", "httpcore", "botocore", "boto3", "urllib3", "git",
                                  "apscheduler")  # apscheduler: a line per job run

# Every attribute a plain LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]+@")
_AUTH_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)(?:[a-z]+\s+)?[^\s\"',;}]+")
# Keys whose value is a credential. ``[\w-]*`` lets access_token, client_secret,
# x-registry-password etc. match; the separator must follow directly, so "tokens=3" does not.
_KEY_VALUE = re.compile(
    r"(?i)(\b[\w-]*(?:password|passwd|passphrase|token|secret|api[_-]?key|apikey"
    r"|credentials?|private[_-]?key)|\bauth)"
    r"([\"']?\s*[:=]\s*[\"']?)([^\s\"'&,;}]+)")
_JWT = re.compile(r"\beyJ[\w-]+\.eyJ[\w-]+\.[\w-]*")
_KNOWN_TOKENS = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}|glpat-[\w-]{20,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16})\b")


def redact(text: str, secrets: SecretRegistry | None = None) -> str:
    """Mask every secret form listed in the module docstring. Pure; safe on any text."""
    if secrets is not None:
        text = secrets.mask(text)
    text = _URL_USERINFO.sub(rf"\1{MASK}@", text)
    text = _AUTH_HEADER.sub(rf"\1{MASK}", text)
    text = _KEY_VALUE.sub(rf"\1\2{MASK}", text)
    text = _JWT.sub(MASK, text)
    return _KNOWN_TOKENS.sub(MASK, text)


class RedactionFilter(logging.Filter):
    """Render and mask a record in place before any formatter sees it.

    The message is rendered here (args merged in) so a secret passed as an argument is
    masked too; the traceback is rendered to ``exc_text`` and ``exc_info`` dropped, so no
    formatter can print the raw exception again. Never drops a record.
    """

    def __init__(self, secrets: SecretRegistry | None = None) -> None:
        super().__init__()
        self.secrets = secrets
        self._tb_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._mask(_render_message(record))
        record.args = None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self._tb_formatter.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self._mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self._mask(record.stack_info)
        for key, value in extra_fields(record).items():
            setattr(record, key, self._mask_value(value))
        return True

    def _mask(self, text: str) -> str:
        return redact(text, self.secrets)

    def _mask_value(self, value: object) -> object:
        if value is None or isinstance(value, bool | int | float):
            return value
        return self._mask(str(value))  # URLs, paths, exceptions: their text is what prints


def _render_message(record: logging.LogRecord) -> str:
    # logging reports a bad format call itself, from emit(); a filter that raised here would
    # instead propagate into the caller, so fall back to showing the raw parts.
    try:
        return record.getMessage()
    except Exception:  # any formatting bug must not crash the logging call
        return f"{record.msg!s} (unformattable arguments: {record.args!r})"


def extra_fields(record: logging.LogRecord) -> dict[str, object]:
    """The structured fields a caller attached with ``extra=``."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}


def _utc_timestamp(created: float, *, millis: bool) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{stamp}.{int(created % 1 * 1000):03d}Z" if millis else f"{stamp}Z"


def _short_logger(name: str) -> str:
    return name.removeprefix("image_updater.") or name


class TextFormatter(logging.Formatter):
    """``2026-11-28T10:00:00Z INFO  reconcile: app=application-x env=dev committed …``"""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={_text_value(v)}" for k, v in _ordered(extra_fields(record)))
        head = f"{_utc_timestamp(record.created, millis=False)} {record.levelname:<5} " \
               f"{_short_logger(record.name)}:"
        line = " ".join(part for part in (head, fields, record.getMessage()) if part)
        return line + _trailer(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the structured fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _utc_timestamp(record.created, millis=True),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _ordered(extra_fields(record)):
            doc.setdefault(key, value)  # an extra named "msg" must not replace the message
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return json.dumps(doc, ensure_ascii=False, default=str)


def _ordered(fields: Mapping[str, object]) -> list[tuple[str, object]]:
    known = [(k, fields[k]) for k in FIELD_ORDER if k in fields]
    return known + sorted((k, v) for k, v in fields.items() if k not in FIELD_ORDER)


def _text_value(value: object) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c.isspace() or c == '"' for c in text)) else text


def _trailer(record: logging.LogRecord) -> str:
    parts = [record.exc_text, record.stack_info]
    return "".join("\n" + p for p in parts if p)


def _parse_level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ConfigError(
            f"Log level {level!r} is not known; use one of DEBUG, INFO, WARNING, ERROR.")
    return number


def scrub(text: str, secrets: SecretRegistry) -> str:
    """``text`` with every secret in ``secrets`` and every secret-shaped value masked, for
    output that does not go through logging (command results and errors the CLI prints)."""
    return redact(text, secrets)


class _OurHandler(logging.StreamHandler):
    """Marks the handler configure_logging installed, so a second call can replace it."""


def configure_logging(
    *,
    fmt: LogFormat | str,
    level: str | int,
    stream: IO[str] | None = None,
    secrets: SecretRegistry,
    logger: logging.Logger | None = None,
) -> logging.Handler:
    """Send ``logger`` (default: root) to ``stream`` (default: stderr) in ``fmt``, masked.

    ``secrets`` is the registry the credential sources add to, shared by reference, so a
    secret read later (a rotated token) is masked from then on.
    Calling it again replaces the handler it installed before, so a reload does not
    duplicate lines; handlers installed by others (pytest, embedders) are left alone.
    Returns the handler, which callers may remove again.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"Log format {fmt!r} is not known; use 'text' or 'json'.")
    number = _parse_level(level)
    target = logger if logger is not None else logging.getLogger()
    for old in [h for h in target.handlers if isinstance(h, _OurHandler)]:
        target.removeHandler(old)
    handler = _OurHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(RedactionFilter(secrets))
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    target.addHandler(handler)
    target.setLevel(number)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if number > logging.DEBUG else number)
    return handler


class Throttle:
    """At most one log line per ``every`` seconds for an event anyone can repeat (refused
    connections, refused API callers): a flood costs one line per interval, with a count.

    ``due()`` counts the event and returns how many happened since the last line when a line
    is due now, else 0. Not thread-safe: callers live on the event loop.
    """

    def __init__(self, every: float = 10.0, *, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.every = every
        self._clock = clock
        self._count = 0
        self._logged_at: float | None = None

    def due(self) -> int:
        self._count += 1
        now = self._clock()
        if self._logged_at is not None and now - self._logged_at < self.every:
            return 0
        count, self._count, self._logged_at = self._count, 0, now
        return count
