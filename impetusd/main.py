"""``impetusd``: run the daemon in the foreground (as launchd and systemd expect)."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import NoReturn

import anyio
import click

from impetusd.config import PRIVATE_UMASK, Config, load_config, make_private_home
from impetusd.protocol.errors import ImpetusError
from impetusd.transport.activation import refuse_waiting
from impetusd.transport.server import DaemonAlreadyRunning

# Errors a restart cannot fix (a bad config.toml, a socket path too long, another
# daemon on the socket) exit with this status: EX_CONFIG, which the systemd unit's
# RestartPreventExitStatus names. launchd's KeepAlive cannot name a status, so its
# plist sets IMPETUS_CANNOT_START_STATUS=0: with SuccessfulExit false, exit 0 is not
# restarted (docs/macos.md).
CANNOT_START = 78


def _cannot_start(message: str) -> NoReturn:
    click.echo(f"impetusd: cannot start: {message}", err=True)
    answered = refuse_waiting(message)
    if answered:
        click.echo(f"impetusd: told {answered} waiting client(s) why", err=True)
    try:
        status = int(os.environ.get("IMPETUS_CANNOT_START_STATUS", CANNOT_START))
    except ValueError:
        status = CANNOT_START
    sys.exit(status)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--socket", "socket_path", type=click.Path(dir_okay=False), help="Unix socket to listen on.")
@click.option("--home", type=click.Path(file_okay=False), help="State directory (default $IMPETUS_HOME or ~/.impetus).")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False), help="Log verbosity (stderr).")
@click.version_option(package_name="impetus")
def main(socket_path: str | None, home: str | None, log_level: str | None) -> None:
    """Run the Impetus daemon in the foreground, logging to stderr."""
    try:
        config = load_config(home=home, socket=socket_path, log_level=log_level)
    except ImpetusError as exc:
        _cannot_start(str(exc))
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s impetusd[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    os.umask(PRIVATE_UMASK)  # every file and folder the daemon and its workers write is the user's alone
    make_private_home(config.home)
    os.environ["IMPETUS_HOME"] = str(config.home)  # the home in use, for plugins (disk free) and workers
    try:
        anyio.run(_run, config)
    except (DaemonAlreadyRunning, ValueError, PermissionError, ImpetusError) as exc:
        _cannot_start(str(exc))
    _leave_lingering_threads()


def _leave_lingering_threads() -> None:
    """A thread abandoned at shutdown (a network read the pull gave up on) would
    keep the interpreter alive after the daemon stopped: exit without it."""
    lingering = [t.name for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if lingering:
        logging.getLogger("impetusd").warning("exiting with %d abandoned thread(s) still running: %s", len(lingering), ", ".join(lingering))
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)


async def _run(config: Config) -> None:
    from impetusd.daemon import run_daemon

    await run_daemon(config)
