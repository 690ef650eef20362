"""Builds the dispatcher the settings describe: sinks, their secrets, and the routes."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence

import httpx

from image_updater.config.settings import NotificationSettings, NotificationSinkSettings
from image_updater.errors import ConfigError
from image_updater.notify.dispatcher import Dispatcher
from image_updater.notify.events import Event, Route
from image_updater.notify.sinks import (
    Delivery,
    Render,
    Sink,
    WebhookSink,
    cloudevents_renderer,
    render_slack,
    render_teams,
)
from image_updater.observability.metrics import Metrics
from image_updater.retry import AsyncSleep, Backoff
from image_updater.secrets import SecretRegistry, read_secret_env, read_secret_file

log = logging.getLogger("image_updater.notify")

_KIND_LABEL = {"slack": "Slack", "teams": "Microsoft Teams", "cloudevents": "CloudEvents"}


def build_dispatcher(settings: NotificationSettings, *, secrets: SecretRegistry,
                     metrics: Metrics, transport: httpx.AsyncBaseTransport | None = None,
                     sleep: AsyncSleep = asyncio.sleep) -> Dispatcher | None:
    """The dispatcher for ``settings``, or None when no sink is configured.

    Each sink's secrets are read once now, so an unreadable one is a
    :class:`~image_updater.errors.ConfigError` at start (and its value is masked in logs
    from the first line); they are read again at each delivery, so rotation works.
    """
    if not settings.sinks:
        return None
    client = httpx.AsyncClient(
        timeout=max(s.timeout for s in settings.sinks), transport=transport,
        headers={"User-Agent": "image-updater"},
        follow_redirects=False)  # a redirect would post the event somewhere not configured
    check_sinks(settings, secrets=secrets)  # fail at start, and register values for masking
    sinks: dict[str, Sink] = {}
    for sink in settings.sinks:
        url = _checked_url(sink, _secret(sink, "url", secrets))
        sinks[sink.name] = WebhookSink(
            name=sink.name, kind=_KIND_LABEL[sink.kind], url=url,
            render=_renderer(sink, secrets), client=client,
            delivery=Delivery(attempts=sink.max_attempts, sleep=sleep,
                              backoff=Backoff(base=sink.backoff, maximum=60.0,
                                              jitter=random.random)))
    routes = [Route(sink=r.sink, apps=frozenset(r.apps), envs=frozenset(r.envs),
                    events=frozenset(r.events)) for r in settings.routes] or \
        [Route(sink=name) for name in sinks]
    return Dispatcher(sinks=sinks, routes=routes, metrics=metrics,
                      queue_size=settings.queue_size, on_close=client.aclose)


async def deliver_now(settings: NotificationSettings, events: Sequence[Event], *,
                      secrets: SecretRegistry, metrics: Metrics) -> None:
    """Deliver ``events`` before a command exits, waiting at most ``flush_timeout`` s; a
    sink that cannot be set up is a warning: the command has done its work already."""
    try:
        dispatcher = build_dispatcher(settings, secrets=secrets, metrics=metrics)
    except ConfigError as exc:
        log.warning("nobody is notified of %s: %s", ", ".join(e.kind for e in events), exc)
        return
    if dispatcher is None:
        return
    dispatcher.start()
    dispatcher.publish(events)
    await dispatcher.aclose(grace=settings.flush_timeout)


def check_sinks(settings: NotificationSettings, *, secrets: SecretRegistry) -> None:
    """Read every sink's URL (and signing key) now: an unreadable one, or a URL that is not
    ``https://`` (``http://`` only to this machine), is a ConfigError before anything starts.
    ``validate --config`` and the daemon call it before the port opens."""
    for sink in settings.sinks:
        _checked_url(sink, _secret(sink, "url", secrets))()
        if sink.kind == "cloudevents":
            _secret(sink, "secret", secrets)()


def _checked_url(sink: NotificationSinkSettings, read: Callable[[], str]
                 ) -> Callable[[], str]:
    """``read``, refusing what is not a web address we may post events to; checked at each
    read, as the file may be rotated."""
    def url() -> str:
        value = read()
        try:
            parsed = httpx.URL(value)
        except (httpx.InvalidURL, TypeError, ValueError):
            parsed = None
        local = parsed is not None and parsed.host in ("127.0.0.1", "localhost", "::1")
        if parsed is None or not parsed.host or parsed.scheme not in ("https", "http") or (
                parsed.scheme == "http" and not local):
            where = f"notifications.sinks[{sink.name}]"
            raise ConfigError(
                f"{where}: the URL read from {sink.url_file or '$' + str(sink.url_env)} is not "
                "an https:// address (http:// is allowed only to this machine); events are "
                "posted only to web receivers. Fix the secret's content.")
        return value

    return url


def _renderer(sink: NotificationSinkSettings, secrets: SecretRegistry) -> Render:
    if sink.kind == "slack":
        return render_slack
    if sink.kind == "teams":
        return render_teams
    key = _secret(sink, "secret", secrets)
    return cloudevents_renderer(source=sink.source, key=key)


def _secret(sink: NotificationSinkSettings, which: str, secrets: SecretRegistry
            ) -> Callable[[], str]:
    """A reader of the sink's ``url`` or ``secret`` from its file or variable."""
    where = f"notifications.sinks[{sink.name}]"
    path: str | None = getattr(sink, f"{which}_file")
    env: str | None = getattr(sink, f"{which}_env")
    if path is not None:
        return lambda: read_secret_file(path, setting=f"{where}.{which}_file", secrets=secrets)
    assert env is not None  # load_settings demands one of the two
    return lambda: read_secret_env(env, setting=f"{where}.{which}_env", secrets=secrets)
