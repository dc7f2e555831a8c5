"""``dashboard`` (open the shim's web page, starting the shim if needed) and
``menubar`` (the macOS menu-bar item)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import click

from . import render

START_TIMEOUT_S = 30.0


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - a loopback http URL we build
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def register(main: click.Group, state_type: Any) -> None:
    pass_state = click.make_pass_decorator(state_type)

    @main.command()
    @click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="The shim's port (started there if nothing answers).")
    @click.option("--no-browser", is_flag=True, help="Print the address instead of opening a browser.")
    @pass_state
    def dashboard(state: Any, port: int, no_browser: bool) -> None:
        """Open the web dashboard, starting 'impetusctl http' on loopback if it is not running.

        A shim started here keeps running in the background (stop it with its pid).
        """
        url = f"http://127.0.0.1:{port}/dashboard"
        started: int | None = None
        if not _answers(url):
            state.client().close()  # the daemon first (autostarting it), so a failure is reported here
            log = state.config.home / "logs" / "http.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "impetusctl", "--socket", str(state.config.socket), "http", "--port", str(port)]
            with open(log, "ab") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
            started = proc.pid
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _answers(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise click.ClickException(f"the HTTP shim did not start on port {port} (see {log})")
                time.sleep(0.1)
        if state.json:
            render.json_out({"url": url, "started_pid": started})
        else:
            click.echo(f"Dashboard on {url}" + (f" (started the shim, pid {started})" if started else ""))
        if not no_browser:
            click.launch(url)

    @main.command()
    @click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="Where 'Open dashboard' points.")
    @pass_state
    def menubar(state: Any, port: int) -> None:
        """Show the daemon's state in the macOS menu bar (macOS only; needs rumps)."""
        from . import menubar as bar

        if why := bar.available():
            raise click.ClickException(why)
        bar.run(state.config.socket, f"http://127.0.0.1:{port}/dashboard")  # pragma: no cover - macOS only
