"""``image-updater run``: the entry point that puts the daemon and its HTTP port together.

It owns the process: signals, the event loop, and closing every client at the end. The
daemon (:mod:`~image_updater.daemon.service`) and the HTTP server
(:mod:`~image_updater.daemon.server`) do not know each other's modules.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

from starlette.routing import BaseRoute

from image_updater.config.policies import load_policies
from image_updater.config.settings import Settings
from image_updater.daemon.server import HttpServer, build_app
from image_updater.daemon.service import Daemon
from image_updater.daemon.status_page import identity_check, mount
from image_updater.model import App
from image_updater.secrets import SecretRegistry
from image_updater.wiring.runtime import Runtime

log = logging.getLogger("image_updater.daemon")


def run_daemon(settings: Settings, policy_paths: Sequence[str], *,
               secrets: SecretRegistry) -> int:
    """Serve until SIGTERM/SIGINT; 0 on a clean stop.

    ``secrets`` is the registry the log handler masks with; credential sources add to it.
    """
    from image_updater.notify.factory import check_sinks

    apps = load_policies(policy_paths, max_file_bytes=settings.limits.policy_file_bytes)
    check_sinks(settings.notifications, secrets=secrets)  # before the port opens
    return asyncio.run(_main(settings, policy_paths, apps, secrets))


async def _main(settings: Settings, policy_paths: Sequence[str], apps: Sequence[App],
                secrets: SecretRegistry) -> int:
    daemon = Daemon(settings=settings, policy_paths=policy_paths,
                    runtime=Runtime(settings, secrets=secrets), apps=apps)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig, stop)
    server = build_server(daemon, settings)
    return await serve(daemon, server, stop)


def http_routes(daemon: Daemon, settings: Settings) -> list[BaseRoute]:
    """Routes a feature adds to the daemon's port, beside /metrics, /healthz, /readyz and
    /webhooks: add one line per feature (its module builds Starlette routes)."""
    from image_updater.daemon.promotions import PromotionService, promotion_routes

    promotions = PromotionService.for_daemon(daemon, settings)
    status = mount(daemon, settings.status_page,
                   authorize=identity_check(promotions.authenticator))[1]
    return [*promotion_routes(promotions), *status]


def build_server(daemon: Daemon, settings: Settings) -> HttpServer:
    """The daemon's HTTP server with every route; the port is bound now (ConfigError)."""
    app = build_app(daemon, settings, extra_routes=http_routes(daemon, settings))
    return HttpServer(app, settings)


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    log.info("received %s; shutting down", sig.name)
    stop.set()


async def serve(daemon: Daemon, server: HttpServer, stop: asyncio.Event) -> int:
    """Run the HTTP server and the daemon until ``stop``; then close everything. Exit code.

    The port keeps answering (probes, metrics) while a running cycle finishes; then it
    closes, after its requests in flight (``server.shutdown_grace``); then the promotion API
    lands in git what those requests moved; the clients close last.
    """
    await server.start()
    # the port closes (after its requests in flight) before the daemon's last steps, so a
    # promotion that moved a tag meanwhile is landed in git before the process exits
    daemon.before_close.insert(0, server.stop)
    log.info("serving on %s; %d app(s), interval %d s", server.address, len(daemon.apps),
             int(daemon.settings.interval), extra={"listen": server.address})
    try:
        ok = await daemon.run(stop)
    finally:
        await server.stop()
        await daemon.runtime.aclose()
    log.info("stopped")
    return 0 if ok else 1
