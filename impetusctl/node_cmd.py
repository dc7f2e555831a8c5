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
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click

from impetusd.protocol.api import NodeInfo, NodeList

from . import render

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


def serve(binary: str, host: str, port: int, threads: int | None, log_path: Path, max_restarts: int | None = None) -> int:
    """Run rpc-server until SIGTERM/SIGINT, restarting it when it dies."""
    cmd = [binary, "--host", host, "--port", str(port)]
    if threads:
        cmd += ["--threads", str(threads)]
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    backoff, restarts = 0.5, 0
    with log_path.open("ab") as log:

        def note(line: str) -> None:
            stamped = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} node: {line}\n"
            log.write(stamped.encode())
            log.flush()
            click.echo(stamped, nl=False, err=True)

        while not stopping:
            note(f"starting {' '.join(cmd)}")
            started = time.monotonic()
            child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            assert child.stdout is not None
            for raw in child.stdout:
                log.write(raw)
                log.flush()
                sys.stderr.buffer.write(raw)
                sys.stderr.flush()
            code = child.wait()
            if stopping:
                break
            if time.monotonic() - started > 60:
                backoff = 0.5
            restarts += 1
            note(f"rpc-server exited ({code}); restarting in {backoff:g} s")
            if max_restarts is not None and restarts > max_restarts:
                return 1
            deadline = time.monotonic() + backoff
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.05)
            backoff = min(backoff * 2, 30.0)
        note("stopped")
    return 0


def show(nodes: list[NodeInfo]) -> None:
    if not nodes:
        click.echo("no compute nodes (add one: impetusctl node add NAME HOST:PORT)")
        return
    click.echo(f"{'NAME':<16} {'ADDRESS':<22} {'STATE':<12} {'FREE':>9} {'TOTAL':>9} {'LATENCY':>9}  USED BY")
    for n in nodes:
        latency = f"{n.latency_ms:.1f} ms" if n.latency_ms is not None else "-"
        memory = f"{render.size(n.free_bytes):>9} {render.size(n.total_bytes):>9}"
        line = f"{n.name:<16} {n.address:<22} {n.state:<12} {memory} {latency:>9}  {', '.join(n.used_by) or '-'}"
        click.echo(line + (f"  ({n.error})" if n.error and n.state != "ready" else ""))


def register(main: click.Group, state_type: Any) -> None:
    pass_state = click.make_pass_decorator(state_type)

    @main.group()
    def node() -> None:
        """Compute nodes a model can be split across (llama.cpp RPC)."""

    @node.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
    @click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
    @click.option("--memory", type=int, help="Bytes this node offers (needs an rpc-server that can cap it; else give the cap to 'node add --memory').")
    @click.option("--threads", type=int, help="CPU threads of the node's compute (default: rpc-server's).")
    @click.option("--allow-remote", is_flag=True, help="Allow a non-loopback address (RPC has no authentication: trusted networks only).")
    @pass_state
    def node_serve(state: Any, host: str, port: int, memory: int | None, threads: int | None, allow_remote: bool) -> None:
        """Run a compute node (rpc-server) here, restarted when it dies, until stopped."""
        if not is_loopback(host):
            if not allow_remote:
                raise click.UsageError(
                    f"--host {host} is not a loopback address; llama.cpp RPC has no authentication, so binding another "
                    "interface needs --allow-remote (and a network you trust: docs/SECURITY.md)"
                )
            click.echo(WARNING.format(host=host, port=port), err=True)
        binary = rpc_server_path()
        if memory is not None:
            usage = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30, check=False)
            if "--mem" not in usage.stdout + usage.stderr:
                raise click.UsageError(
                    f"this rpc-server ({binary}) reports its device's free memory and cannot be capped; "
                    f"give the cap where the daemon adds the node: impetusctl node add NAME {host}:{port} --memory {memory}"
                )
        try:  # a clear error rather than rpc-server's own when the port is taken
            with socket.create_server((host, port)):
                pass
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
        sys.exit(serve(binary, host, port, threads, state.config.home / "logs" / f"node-{port}.log"))

    @node.command("ls")
    @pass_state
    def node_ls(state: Any) -> None:
        """List the compute nodes the daemon may use, each probed now."""
        with state.client() as client:
            result = client.call("nodes.list", type=NodeList)
        render.json_out(result) if state.json else show(result.nodes)

    @node.command("add")
    @click.argument("name")
    @click.argument("address")
    @click.option("--memory", type=int, help="Most bytes a load may place on this node.")
    @pass_state
    def node_add(state: Any, name: str, address: str, memory: int | None) -> None:
        """Let the daemon use the node at ADDRESS (host:port) as NAME."""
        params: dict[str, Any] = {"name": name, "address": address}
        if memory is not None:
            params["memory_limit_bytes"] = memory
        with state.client() as client:
            info = client.call("nodes.add", params, type=NodeInfo)
        render.json_out(info) if state.json else show([info])

    @node.command("rm")
    @click.argument("name")
    @pass_state
    def node_rm(state: Any, name: str) -> None:
        """Forget the node NAME."""
        with state.client() as client:
            result = client.call("nodes.remove", {"name": name}, type=NodeList)
        render.json_out(result) if state.json else click.echo(f"removed {name}")
