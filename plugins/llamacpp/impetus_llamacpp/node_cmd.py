"""``impetusctl node serve|ls|add|rm``: compute nodes (llama.cpp ``rpc-server``).

``node serve`` runs rpc-server in the foreground and restarts it when it dies (a
doubling backoff, reset after a minute of running), its output on stderr and appended
to ``<home>/logs/node-<port>.log``; SIGTERM or Ctrl-C stop both. llama.cpp's RPC has
no authentication: anyone who reaches the port can run code-sized workloads and read
or write the node's buffers, so it binds loopback unless ``--allow-remote`` says
otherwise (docs/SECURITY.md, Compute nodes).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click

from impetusctl import render
from impetusctl.service import manage
from impetusctl.service.commands import report_install
from impetusd.plugin_api import CliState, NodeInfo

from . import node_service
from .node_api import NodeList

BINARY_ENV = "IMPETUS_RPC_SERVER"
DEFAULT_PORT = 50052  # rpc-server's own default
WARNING = (
    "WARNING: this node listens on {host}:{port}, beyond this machine. llama.cpp's RPC protocol has no "
    "authentication or encryption: anyone who can reach that port can use this machine's memory and CPU "
    "and read what it computes. Use it only on a network you trust entirely (docs/SECURITY.md)."
)


def rpc_server_path() -> str:
    """``IMPETUS_RPC_SERVER``, the one scripts/setup installed next to llama-server, or PATH's."""
    named = os.environ.get(BINARY_ENV)
    if named:
        return named
    installed = Path(sys.prefix) / "libexec" / "impetus" / "rpc-server"
    if installed.exists():
        return str(installed)
    found = shutil.which("rpc-server") or shutil.which("ggml-rpc-server")
    if found is None:
        raise click.ClickException(f"no rpc-server (looked at {installed} and PATH); run scripts/setup, or set {BINARY_ENV}")
    return found


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _supervise(cmd: list[str], log_path: Path, stop: threading.Event, children: dict[int, subprocess.Popen[bytes]], slot: int) -> None:
    """Run ``cmd`` until ``stop``, restarting it when it dies (0.5 s doubling to 30 s,
    reset after a minute up); its output to stderr and ``log_path``."""
    backoff = 0.5
    with log_path.open("ab") as log:

        def note(line: str) -> None:
            stamped = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} node: {line}\n"
            log.write(stamped.encode())
            log.flush()
            click.echo(stamped, nl=False, err=True)

        while not stop.is_set():
            note(f"starting {' '.join(cmd)}")
            started = time.monotonic()
            child = children[slot] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if stop.is_set():  # stopped between the check and the start
                child.terminate()
            assert child.stdout is not None
            for raw in child.stdout:
                log.write(raw)
                log.flush()
                sys.stderr.buffer.write(raw)
                sys.stderr.flush()
            code = child.wait()
            if stop.is_set():
                break
            if time.monotonic() - started > 60:
                backoff = 0.5
            note(f"rpc-server exited ({code}); restarting in {backoff:g} s")
            stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)
        note("stopped")


def serve(binary: str, host: str, ports: list[int], threads: int | None, logs: Path) -> int:
    """Run one rpc-server per port until SIGTERM/SIGINT, restarting each when it dies.

    An rpc-server serves one client (one llama-server, so one loaded model) at a time;
    each further port lets one more model use this node at once."""
    stop = threading.Event()
    children: dict[int, subprocess.Popen[bytes]] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        for child in list(children.values()):
            if child.poll() is None:
                child.terminate()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logs.mkdir(parents=True, exist_ok=True)
    workers = []
    for slot, port in enumerate(ports):
        cmd = [binary, "--host", host, "--port", str(port), *(["--threads", str(threads)] if threads else [])]
        worker = threading.Thread(target=_supervise, args=(cmd, logs / f"node-{port}.log", stop, children, slot), daemon=True)
        worker.start()
        workers.append(worker)
    while any(w.is_alive() for w in workers):
        for w in workers:
            w.join(0.2)  # short joins: the main thread stays free for the signal handler
    return 0


def check_host(host: str, port: int, allow_remote: bool, warn: bool) -> None:
    """Loopback, or ``--allow-remote`` (and then a warning on stderr)."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise click.UsageError(
            f"--host {host} is not a loopback address; llama.cpp RPC has no authentication, so binding another "
            "interface needs --allow-remote (and a network you trust: docs/SECURITY.md)"
        )
    if warn:
        click.echo(WARNING.format(host=host, port=port), err=True)


def show(nodes: list[NodeInfo]) -> None:
    if not nodes:
        click.echo("no compute nodes (add one: impetusctl node add NAME HOST:PORT)")
        return
    click.echo(f"{'NAME':<16} {'ADDRESS':<22} {'STATE':<12} {'FREE':>9} {'TOTAL':>9} {'LATENCY':>9}  USED BY")
    for n in nodes:
        latency = f"{n.latency_ms:.1f} ms" if n.latency_ms is not None else "-"
        memory = f"{render.size(n.free_bytes):>9} {render.size(n.total_bytes):>9}"
        address = n.address + (f" (+{n.clients - 1})" if n.clients > 1 else "")
        line = f"{n.name:<16} {address:<22} {n.state:<12} {memory} {latency:>9}  {', '.join(n.used_by) or '-'}"
        click.echo(line + (f"  ({n.error})" if n.error and n.state != "ready" else ""))


_SERVE_OPTIONS = (
    click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on."),
    click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535), help="The first client's port."),
    click.option(
        "--clients",
        default=1,
        show_default=True,
        type=click.IntRange(1, 16),
        help="Models that may use this node at once: one rpc-server each, on ports PORT..PORT+N-1 (give the daemon the same: node add --clients).",
    ),
    click.option("--threads", type=int, help="CPU threads of each rpc-server's compute (default: rpc-server's)."),
    click.option("--allow-remote", is_flag=True, help="Allow a non-loopback address (RPC has no authentication: trusted networks only)."),
)


def _with_serve_options(fn: Any) -> Any:
    for option in reversed(_SERVE_OPTIONS):
        fn = option(fn)
    return fn


def _check_memory_cap(binary: str, host: str, port: int, memory: int) -> None:
    """``--memory`` needs an rpc-server that can cap what it offers."""
    usage = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30, check=False)
    if "--mem" not in usage.stdout + usage.stderr:
        raise click.UsageError(
            f"this rpc-server ({binary}) reports its device's free memory and cannot be capped; "
            f"give the cap where the daemon adds the node: impetusctl node add NAME {host}:{port} --memory {memory}"
        )


def _free_ports(host: str, port: int, clients: int) -> list[int]:
    """PORT..PORT+N-1, each checked free now."""
    ports = list(range(port, port + clients))
    if ports[-1] > 65535:
        raise click.UsageError(f"--port {port} --clients {clients} goes past port 65535")
    for p in ports:  # a clear error rather than rpc-server's own when a port is taken
        try:
            with socket.create_server((host, p)):
                pass
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}:{p}: {exc}") from None
    return ports


# The commands find impetusctl's ``CliState`` as the click context's ``obj``.


@click.command("serve")
@_with_serve_options
@click.option("--memory", type=int, help="Bytes this node offers (needs an rpc-server that can cap it; else give the cap to 'node add --memory').")
@click.pass_obj
def node_serve(state: CliState, host: str, port: int, clients: int, threads: int | None, allow_remote: bool, memory: int | None) -> None:
    """Run a compute node (rpc-server) here, restarted when it dies, until stopped."""
    check_host(host, port, allow_remote, warn=True)
    binary = rpc_server_path()
    if memory is not None:
        _check_memory_cap(binary, host, port, memory)
    ports = _free_ports(host, port, clients)
    sys.exit(serve(binary, host, ports, threads, state.config.home / "logs"))


@click.command("install")
@_with_serve_options
@click.option("--no-start", is_flag=True, help="Write the service file only; do not ask the service manager to start it.")
@click.pass_obj
def node_install(state: CliState, host: str, port: int, clients: int, threads: int | None, allow_remote: bool, no_start: bool) -> None:
    """Run 'node serve' with these options at login (systemd --user / launchd). Safe to run again."""
    check_host(host, port, allow_remote, warn=True)
    args = ["--host", host, "--port", str(port)]
    args += [*(["--clients", str(clients)] if clients != 1 else []), *(["--threads", str(threads)] if threads else [])]
    args += ["--allow-remote"] if allow_remote else []
    try:
        changed = node_service.install(args, start=not no_start)
    except manage.ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    report_install(state.json, changed, not no_start, "node service file", f"the node serves {host}:{port} at login")


@click.command("uninstall")
@click.pass_obj
def node_uninstall(state: CliState) -> None:
    """Stop the node service and remove its file."""
    removed = node_service.uninstall()
    if state.json:
        render.json_out({"removed": removed})
    else:
        click.echo("\n".join(f"removed {p}" for p in removed) or "no node service was installed")


@click.command("ls")
@click.pass_obj
def node_ls(state: CliState) -> None:
    """List the compute nodes the daemon may use, each probed now."""
    with state.client() as client:
        result = client.call("nodes.list", type=NodeList)
    render.json_out(result) if state.json else show(result.nodes)


@click.command("add")
@click.argument("name")
@click.argument("address")
@click.option("--memory", type=int, help="Most bytes the loads together may place on this node.")
@click.option(
    "--clients", default=1, show_default=True, type=click.IntRange(1, 16), help="Its rpc-servers' count (node serve --clients): ports PORT..PORT+N-1."
)
@click.pass_obj
def node_add(state: CliState, name: str, address: str, memory: int | None, clients: int) -> None:
    """Let the daemon use the node at ADDRESS (host:port) as NAME."""
    params: dict[str, Any] = {"name": name, "address": address, "clients": clients}
    if memory is not None:
        params["memory_limit_bytes"] = memory
    with state.client() as client:
        info = client.call("nodes.add", params, type=NodeInfo)
    render.json_out(info) if state.json else show([info])


@click.command("rm")
@click.argument("name")
@click.pass_obj
def node_rm(state: CliState, name: str) -> None:
    """Forget the node NAME."""
    with state.client() as client:
        result = client.call("nodes.remove", {"name": name}, type=NodeList)
    render.json_out(result) if state.json else click.echo(f"removed {name}")


def command() -> click.Group:
    """The ``node`` group (``impetus_register_commands``)."""

    @click.group()
    def node() -> None:
        """Compute nodes a model can be split across (llama.cpp RPC)."""

    for cmd in (node_serve, node_install, node_uninstall, node_ls, node_add, node_rm):
        node.add_command(cmd)
    return node
