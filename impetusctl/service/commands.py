"""``impetusctl service install|uninstall|status|logs``."""

from __future__ import annotations

import os
from typing import Any

import click

from .. import render
from . import manage


def report_install(as_json: bool, changed: list[str], started: bool, what: str, when: str) -> None:
    """What ``install`` did: the files written (``what`` when none was) and, if started, ``when`` it runs."""
    if as_json:
        render.json_out({"changed": changed, "started": started})
        return
    for path in changed:
        click.echo(f"wrote {path}")
    if not changed:
        click.echo(f"{what} already up to date")
    if started:
        click.echo(f"service enabled; {when}")


def register(main: click.Group, state_type: Any) -> None:
    pass_state = click.make_pass_decorator(state_type)

    @main.group()
    def service() -> None:
        """Run impetusd at login (launchd on macOS, systemd --user on Linux)."""

    @service.command()
    @click.option("--no-start", is_flag=True, help="Write the service files only; do not ask the service manager to start them.")
    @pass_state
    def install(state: Any, no_start: bool) -> None:
        """Install (or update) the login service and start it. Safe to run again."""
        try:
            changed = manage.install(state.config, start=not no_start)
        except manage.ServiceError as exc:
            raise click.ClickException(str(exc)) from None
        report_install(state.json, changed, not no_start, "service files", "impetusd starts at login and on the first connection")

    @service.command()
    @pass_state
    def uninstall(state: Any) -> None:
        """Stop the login service and remove its files."""
        removed = manage.uninstall(state.config)
        if state.json:
            render.json_out({"removed": removed})
        else:
            click.echo("\n".join(f"removed {p}" for p in removed) or "no service was installed")

    @service.command()
    @pass_state
    def status(state: Any) -> None:
        """Whether the service is installed and running."""
        st = manage.status(state.config)
        if state.json:
            render.json_out(st)
            return
        click.echo(f"{st.manager}: {'installed' if st.installed else 'not installed'}; {st.detail}")
        for path in st.files:
            click.echo(f"  {path}{'' if os.path.exists(path) else ' (missing)'}")

    @service.command()
    @click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
    @pass_state
    def logs(state: Any, follow: bool) -> None:
        """Print the service's recent log."""
        cmd = manage.logs_command(state.config, follow)
        try:
            os.execvp(cmd[0], cmd)
        except FileNotFoundError:
            raise click.ClickException(f"{cmd[0]} is not available on this machine") from None
