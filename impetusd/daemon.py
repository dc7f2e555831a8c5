"""The Daemon object: built by a factory, handed to hooks, run by ``run_daemon``.

The composition root: the only module that builds the services and wires them
together; each service receives what it uses, RPC handlers a ``Services``."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pluggy

from impetusd.config import Config
from impetusd.dispatch.context import RequestContext
from impetusd.dispatch.dispatcher import Dispatcher
from impetusd.dispatch.services import Services
from impetusd.observe.events import Event, EventBus
from impetusd.observe.metrics import MetricsRecorder
from impetusd.plugin.manager import await_maybe, build_registries, make_plugin_manager, plugin_summary
from impetusd.plugin.registries import Registries
from impetusd.protocol.messages import Codec
from impetusd.residency.manager import ModelManager
from impetusd.residency.plan import check_backend_tables
from impetusd.residency.spares import Spares
from impetusd.residency.thermal import ThermalWatch
from impetusd.store.pull import Pulls
from impetusd.store.registry import ModelStore
from impetusd.transport.activation import inherited_socket
from impetusd.transport.server import Server, prepare_socket_path

log = logging.getLogger(__name__)

EXIT_SLACK_S = 10.0  # past shutdown_grace_s: the most the rest of a shutdown may take


class Daemon:
    def __init__(self, config: Config, pm: pluggy.PluginManager, registries: Registries) -> None:
        self.config = config
        self.pm = pm
        self.registries = registries
        self.stopping = False
        self.codec = Codec(max_batch_items=config.max_batch_items)
        self.metrics = MetricsRecorder()
        self.events = EventBus()
        self.store = ModelStore(config.home / "registry.db")
        self.thermal = ThermalWatch(config, registries.monitors, self.emit)
        self.spares = Spares(config, registries.backends, lambda: self.stopping)
        self.residency = ModelManager(config, self.store, registries, pm.hook, self.emit, self.metrics, self.thermal, self.spares)
        self.pulls = Pulls(config, self.store, registries.formats, self.emit, lambda name: name in self.residency.resident)
        self.services = Services(
            config=config,
            registries=registries,
            plugins=lambda: plugin_summary(pm),
            store=self.store,
            pulls=self.pulls,
            residency=self.residency,
            thermal=self.thermal,
            events=self.events,
            metrics=self.metrics,
            emit=self.emit,
            lifecycle=self,
        )
        self.dispatcher = Dispatcher(self.services)
        self.started_at = time.time()
        self.server = Server(
            config.socket,
            codec=self.codec,
            handle=self.dispatcher.handle,
            stopping=lambda: self.stopping,
            max_connections=config.max_connections,
            max_line_bytes=config.max_line_bytes,
            max_buffer_bytes=config.max_client_buffer_bytes,
            max_requests_per_connection=config.max_requests_per_connection,
        )
        self.stop_requested = anyio.Event()
        self.activated: socket.socket | None = None  # a listening socket from systemd/launchd

    @property
    def connections(self) -> int:
        return self.server.connections

    @property
    def in_flight(self) -> set[RequestContext]:
        return self.server.in_flight

    def emit(self, event: Event) -> None:
        self.events.publish(event)
        try:
            self.pm.hook.impetus_event(event=event)
        except Exception:
            log.exception("an impetus_event hook failed")

    def request_stop(self) -> None:
        self.stop_requested.set()

    @property
    def uptime(self) -> float:
        return time.time() - self.started_at


def create_daemon(config: Config) -> Daemon:
    pm = make_plugin_manager(config.plugins, config.disabled_plugins)
    registries = build_registries(pm)
    check_backend_tables(config, registries.backends)
    return Daemon(config, pm, registries)


async def run_daemon(config: Config, *, ready: Any = None) -> None:
    """Run until SIGTERM/SIGINT or ``daemon.shutdown``; exits cleanly."""
    activated = inherited_socket()
    if activated is not None:
        config.socket = Path(activated.getsockname())
    lock = prepare_socket_path(config.socket, activated=activated is not None)
    daemon = create_daemon(config)
    daemon.activated = activated
    try:
        async with anyio.create_task_group() as root:
            root.start_soon(_watch_signals, daemon)
            await root.start(daemon.residency.run)  # the workers' task group and the keep-alive reaper
            await root.start(daemon.spares.run)  # only with spare_worker = true
            await root.start(daemon.pulls.run)
            await root.start(daemon.thermal.run, daemon.residency.retune)
            await root.start(daemon.server.serve, activated)
            for result in daemon.pm.hook.impetus_startup(daemon=daemon):
                await await_maybe(result)
            log.info("impetusd ready (pid %s)", os.getpid())
            if ready is not None:
                ready(daemon)
            await daemon.stop_requested.wait()
            _exit_deadline(config.shutdown_grace_s + EXIT_SLACK_S)
            log.info("stopping: no new connections; draining for up to %.0f s", config.shutdown_grace_s)
            daemon.stopping = True
            daemon.server.stop_accepting()
            if activated is None:  # an activated socket belongs to the service manager
                config.socket.unlink(missing_ok=True)
            await daemon.server.drain(config.shutdown_grace_s)
            for result in daemon.pm.hook.impetus_shutdown(daemon=daemon):
                await await_maybe(result)
            daemon.pulls.cancel_all()  # transfers stop at their next chunk; partials stay
            await daemon.residency.stop_all()
            root.cancel_scope.cancel()
    finally:
        if activated is None:
            config.socket.unlink(missing_ok=True)
        daemon.store.close()
        lock.close()
    log.info("impetusd stopped")


def _exit_deadline(seconds: float) -> None:
    """The last resort: whatever a hook, a worker or a thread is doing, the
    process ends ``seconds`` after the stop began (the socket is already gone;
    the kernel frees the lock)."""

    def expire() -> None:
        log.error("shutdown did not finish within %.0f s; exiting anyway", seconds)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


async def _watch_signals(daemon: Daemon) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            daemon.request_stop()
