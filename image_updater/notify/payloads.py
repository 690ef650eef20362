"""The request bodies each sink posts, built from an :class:`Event`. Pure: dicts and bytes.

- Slack incoming webhook: Block Kit ``blocks`` plus ``text``, the plain fallback Slack shows
  in notifications and clients without blocks.
- Microsoft Teams workflow ("When a Teams webhook request is received"): a ``message`` whose
  one attachment is an Adaptive Card 1.4.
- Generic: a CloudEvents 1.0 event in structured JSON mode
  (``Content-Type: application/cloudevents+json``), signed with HMAC-SHA256 over the exact
  body bytes; the hex digest is sent as ``X-Image-Updater-Signature-256: sha256=<hex>``
  (the shape of GitHub's ``X-Hub-Signature-256``), so a receiver recomputes it over the raw
  body before parsing and compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC
from typing import Any

from image_updater.notify.events import Event

SIGNATURE_HEADER = "X-Image-Updater-Signature-256"
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
#: CloudEvents ``type`` is this prefix and the event kind (reverse-DNS, as the spec advises)
CLOUDEVENTS_TYPE_PREFIX = "io.image-updater."
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"

_SLACK_HEADER_MAX = 150     # Block Kit: a header's plain_text is at most 150 characters
_SLACK_FIELD_MAX = 2000     # and a section field's text at most 2000
_SLACK_FIELDS_MAX = 10      # and a section holds at most 10 fields
_ICON = {"info": ":white_check_mark:", "warning": ":warning:", "error": ":rotating_light:"}
_CARD_COLOR = {"info": "Good", "warning": "Warning", "error": "Attention"}


def slack(event: Event) -> dict[str, Any]:
    """An incoming-webhook message: a header, the summary, the details as fields."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                    "text": _cut(f"{event.app}/{event.env}: {event.kind}",
                                                 _SLACK_HEADER_MAX)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_summary(event)}},
    ]
    fields = [{"type": "mrkdwn", "text": _cut(f"*{_esc(k)}*\n{_esc(v)}", _SLACK_FIELD_MAX)}
              for k, v in event.details if v][:_SLACK_FIELDS_MAX]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"image-updater · {_stamp(event)}"}]})
    return {"text": event.summary, "blocks": blocks}


def _slack_summary(event: Event) -> str:
    text = f"{_ICON[event.severity]} {_esc(event.summary)}"
    if event.link:
        text += f" <{_esc(event.link)}|Open>"
    return _cut(text, 3000)  # a section's text is at most 3000 characters


def teams(event: Event) -> dict[str, Any]:
    """A workflow-webhook message carrying one Adaptive Card 1.4."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": f"{event.app}/{event.env}: {event.kind}",
         "weight": "Bolder", "size": "Medium", "wrap": True,
         "color": _CARD_COLOR[event.severity]},
        {"type": "TextBlock", "text": event.summary, "wrap": True},
    ]
    facts = [{"title": k, "value": v} for k, v in event.details if v]
    if facts:
        body.append({"type": "FactSet", "facts": facts})
    body.append({"type": "TextBlock", "text": f"image-updater · {_stamp(event)}",
                 "isSubtle": True, "size": "Small", "wrap": True})
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard", "version": "1.4", "body": body,
    }
    if event.link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open", "url": event.link}]
    return {"type": "message",
            "attachments": [{"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": card}]}


def cloudevent(event: Event, *, source: str, event_id: str) -> dict[str, Any]:
    """A CloudEvents 1.0 event in structured mode; ``event_id`` must be unique per source."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": CLOUDEVENTS_TYPE_PREFIX + event.kind,
        "subject": f"{event.app}/{event.env}",
        "time": _stamp(event),
        "datacontenttype": "application/json",
        "data": event.as_data(),
    }


def encode(payload: dict[str, Any]) -> bytes:
    """The body bytes posted (and signed): compact UTF-8 JSON."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def signature(body: bytes, key: str) -> str:
    """The ``X-Image-Updater-Signature-256`` value for ``body``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _stamp(event: Event) -> str:
    """RFC 3339 in UTC with a ``Z``, as CloudEvents ``time`` asks."""
    return event.time.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _esc(text: str) -> str:
    """Slack reads ``&``, ``<`` and ``>`` as markup (``<!channel>`` would ping everyone)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
