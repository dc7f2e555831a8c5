"""``impetusctl``: thin click commands over the typed client."""

from __future__ import annotations

import sys
from typing import Any

import click
import msgspec

from impetusd.local import Config, load_config, plugin_commands
from impetusd.protocol.api import Chunk, DaemonInfo, GenerationResult, Health, LoadedList, LoadResult, ModelList, UnloadResult
from impetusd.protocol.errors import ImpetusError

from . import dashboard_cmd, embed_cmd, render, run_options, store_cmds
from .autostart import connect
from .client import Client, DaemonUnavailable
from .service import commands as service_commands


class State(msgspec.Struct):
    config: Config
    json: bool
    autostart: bool

    def client(self) -> Client:
        return connect(self.config, self.autostart)


class Group(click.Group):
    """Every failure becomes one clear line on stderr and a non-zero exit. The plugins'
    commands (``impetus_register_commands``) join the built-in ones when a name is not
    built in, or the help lists them: a built-in command loads no plugin."""

    _plugins: dict[str, Any] | None = None

    def _plugin_commands(self) -> dict[str, Any]:
        if self._plugins is None:
            self._plugins = {name: make for name, make in plugin_commands().items() if name not in self.commands}
        return self._plugins

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugin_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None and cmd_name in self._plugin_commands():
            found = self._plugin_commands()[cmd_name]()
            self.add_command(found, cmd_name)
        return found

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ImpetusError as exc:
            click.echo(f"Error: {exc.message} [{exc.name}]", err=True)
            ctx.exit(1)
        except (DaemonUnavailable, OSError) as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--socket", "socket_path", type=click.Path(dir_okay=False), help="Daemon socket (default: $IMPETUS_SOCKET or the standard path).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--no-autostart", is_flag=True, help="Fail instead of starting impetusd when nothing answers.")
@click.version_option(package_name="impetus")
@click.pass_context
def main(ctx: click.Context, socket_path: str | None, as_json: bool, no_autostart: bool) -> None:
    """Talk to impetusd, the local LLM daemon."""
    try:
        config = load_config(socket=socket_path)
    except ImpetusError as exc:
        raise click.ClickException(exc.message) from None
    ctx.obj = State(config=config, json=as_json, autostart=not no_autostart)


@main.command()
@click.pass_obj
def status(state: State) -> None:
    """Show whether the daemon runs, and what it has."""
    with state.client() as client:
        info = client.call("daemon.info", type=DaemonInfo)
        health = client.call("daemon.health", type=Health)
    if state.json:
        render.json_out({"info": info, "health": health})
    else:
        render.status(info, health)


def _show(state: State, method: str, result_type: type, table: Any) -> None:
    with state.client() as client:
        result: Any = client.call(method, type=result_type)
    render.json_out(result) if state.json else table(result)


@main.command("ls")
@click.pass_obj
def list_models(state: State) -> None:
    """List models on this machine."""
    _show(state, "models.list", ModelList, render.models)


@main.command()
@click.pass_obj
def ps(state: State) -> None:
    """List loaded models and their worker processes."""
    _show(state, "models.loaded", LoadedList, render.loaded)


@main.command()
@click.argument("model")
@click.option("--backend", help="Run on this backend instead of the automatic choice.")
@click.option("--keep-alive", help="How long to stay loaded when idle (e.g. 30s, 5m, -1 = forever).")
@click.option("--kv-type", type=click.Choice(["f16", "q8_0", "q4_0"]), help="The KV cache's element type (backends that offer it).")
@click.option("--flash-attn", type=click.Choice(["auto", "on", "off"]), help="Flash attention (backends that offer it).")
@click.option("--draft", metavar="DRAFT_MODEL", help="Speculative decoding with this draft model (same vocabulary).")
@click.option("--ngram", is_flag=True, default=None, help="Speculative decoding from n-grams of the context, no draft model.")
@click.option("--gpu-layers", type=click.IntRange(min=0), help="Layers to offload to the GPU (a backend that offloads; more than the model has: all).")
@click.option("--nodes", help="Split it across these compute nodes (names from 'node ls', or host:port; comma-separated; '' = none).")
@click.option("--ranks", type=click.IntRange(min=1, max=16), help="Split it across this many processes on this machine (MLX: mlx.distributed ring).")
@click.pass_obj
def load(
    state: State,
    model: str,
    backend: str | None,
    keep_alive: str | None,
    kv_type: str | None,
    flash_attn: str | None,
    draft: str | None,
    ngram: bool | None,
    gpu_layers: int | None,
    nodes: str | None,
    ranks: int | None,
) -> None:
    """Load MODEL into its own worker process."""
    params: dict[str, Any] = {
        "model": model,
        "backend": backend,
        "keep_alive": keep_alive,
        "kv_type": kv_type,
        "flash_attn": flash_attn,
        "draft": draft,
        "ngram": ngram,
        "n_gpu_layers": gpu_layers,
        "ranks": ranks,
    }
    if nodes is not None:
        params["nodes"] = [n.strip() for n in nodes.split(",") if n.strip()]
    with state.client() as client:
        result = client.call("models.load", {k: v for k, v in params.items() if v is not None}, type=LoadResult)
    if state.json:
        render.json_out(result)
    else:
        m = result.model
        warm = f", warm-up {m.warmup_ms / 1000:.2f} s" if m.warmup_ms is not None else ""
        verb = "already loaded" if result.already_loaded else f"loaded in {m.load_ms / 1000:.1f} s{warm}"
        gpu = f"; {m.estimate.gpu_layers} layers on the GPU" if m.estimate and m.estimate.gpu_layers else ""
        click.echo(f"{m.name} {verb} on {m.backend} (pid {m.pid}){gpu}")
        for share in m.nodes:
            click.echo(f"  {share.name}{f' ({share.address})' if share.address else ''}: {render.size(share.bytes)}")
        for dropped in m.nodes_dropped:
            click.echo(f"  left out: {dropped}")


@main.command()
@click.argument("model")
@click.pass_obj
def unload(state: State, model: str) -> None:
    """Unload MODEL, ending its worker process."""
    with state.client() as client:
        result = client.call("models.unload", {"model": model}, type=UnloadResult)
    render.json_out(result) if state.json else click.echo(f"unloaded {result.name} (pid {result.pid} ended)")


@main.command()
@click.argument("model")
@click.argument("prompt", required=False)
@click.option("--system", help="A system message to start the conversation.")
@click.option("--max-tokens", type=int, help="Stop after this many tokens.")
@click.option("--temperature", type=float)
@click.option("--top-p", type=float)
@click.option("--top-k", type=int)
@click.option("--min-p", type=float)
@click.option("--seed", type=int)
@click.option("--stop", multiple=True, help="Stop sequence (repeatable).")
@click.option("--keep-alive", help="How long the model stays loaded afterwards (e.g. 5m, 0, -1).")
@click.option("--backend", help="Load MODEL on this backend (e.g. mlx) instead of the automatic choice.")
@click.option("--format", "fmt", metavar="json|FILE", help="Constrain the answer: 'json' (any object), or a file with a JSON schema (or a format object).")
@click.option("--tools", "tools_file", type=click.Path(exists=True, dir_okay=False), help="A JSON file with a list of OpenAI-shaped function tools.")
@click.option("--tool-choice", help="auto, none, required, or a tool's name (with --tools).")
@click.option("--logprobs", type=click.IntRange(0, 20), help="Show each token's log-probability and its N most likely alternatives.")
@click.option("--think/--no-think", default=None, help="Reasoning on or off, where the model's chat template supports it.")
@click.pass_obj
def run(state: State, model: str, prompt: str | None, system: str | None, backend: str | None, **options: Any) -> None:
    """Answer PROMPT with MODEL, or chat interactively when no prompt is given.

    In the interactive chat, /bye (or Ctrl-D) quits and history is kept.
    Tool calls the model makes are printed as NAME(ARGUMENTS), one a line
    (with --json, under "tool_calls"); reasoning goes to stderr.
    """
    structured = run_options.params(options.pop("fmt"), options.pop("tools_file"), options.pop("tool_choice"), options.pop("logprobs"))
    params = {k: v for k, v in options.items() if v not in (None, ())}
    params.update(structured)
    if "stop" in params:
        params["stop"] = list(params["stop"])
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip()
    with state.client() as client:
        if backend is not None:  # a model loaded on another backend is refused (NoBackend)
            _load(client, state, {"model": model, "backend": backend})
        if prompt is not None:
            history.append({"role": "user", "content": prompt})
            try:
                result = _chat(client, state, model, history, params)
            except ImpetusError as exc:
                if not _pull_instead(client, state, model, exc):
                    raise
                result = _chat(client, state, model, history, params)
            if result.finish_reason == "cancelled":
                sys.exit(130)
            return
        if backend is None:
            _load(client, state, {"model": model})
        _interactive(client, state, model, history, params)


def _load(client: Client, state: State, params: dict[str, Any]) -> None:
    try:
        client.call("models.load", params)
    except ImpetusError as exc:
        if not _pull_instead(client, state, params["model"], exc):
            raise
        client.call("models.load", params)


def _pull_instead(client: Client, state: State, model: str, exc: ImpetusError) -> bool:
    """A Hub name that is not here yet is pulled (as ollama run does); True if it was."""
    if exc.name != "ModelNotFound" or not store_cmds.looks_pullable(model):
        return False
    click.echo(f"{model} is not on this machine; pulling it", err=True)
    result = store_cmds.pull_with_progress(client, model, quiet=state.json)
    if result.status == "cancelled":
        click.echo("pull cancelled; run the same command to resume", err=True)
        sys.exit(130)
    return True


def _chat(client: Client, state: State, model: str, history: list[dict[str, str]], params: dict[str, Any]) -> GenerationResult:
    stream = not state.json
    request = {"model": model, "messages": history, "stream": stream, **params}
    decoder = msgspec.json.Decoder(Chunk)

    def on_note(method: str, raw: msgspec.Raw) -> None:
        if method == "chat.chunk":
            chunk = decoder.decode(bytes(raw))
            if chunk.kind != "tool_call":  # calls are printed whole, at the end
                click.echo(chunk.delta, nl=False, err=chunk.kind == "reasoning")
                (sys.stderr if chunk.kind == "reasoning" else sys.stdout).flush()

    rid = client.send("chat", request)
    assert rid is not None
    try:
        raw = client.wait(rid, on_note)
    except KeyboardInterrupt:
        client.cancel(rid)  # the daemon stops at the next token and answers
        raw = client.wait(rid, on_note)
    result = msgspec.json.decode(bytes(raw), type=GenerationResult)
    if state.json:
        render.json_out(render.run_json(result))
    else:
        click.echo()
        run_options.show(result)
        if result.finish_reason == "cancelled":
            click.echo("[cancelled]", err=True)
    return result


def _interactive(client: Client, state: State, model: str, history: list[dict[str, str]], params: dict[str, Any]) -> None:
    click.echo(f"Chatting with {model}. Type /bye to quit.", err=True)
    while True:
        try:
            line = click.prompt(">>>", prompt_suffix=" ", default="", show_default=False)
        except (EOFError, click.Abort):
            click.echo(err=True)
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/bye", "/exit", "/quit"):
            return
        history.append({"role": "user", "content": text})
        result = _chat(client, state, model, history, params)
        assert result.message is not None
        history.append({"role": "assistant", "content": result.message.content})


@main.command("http")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on. Anything but loopback needs --api-key.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port (0 picks a free one and prints it).")
@click.option("--api-key", envvar="IMPETUS_API_KEY", help="Require KEY (Bearer or x-api-key) on every route but /health (or set IMPETUS_API_KEY).")
@click.option("--allow-origin", "origins", multiple=True, help="Let browser pages from ORIGIN call the API (CORS; repeatable). Off by default.")
@click.option("--allow-host", "hosts", multiple=True, help="Also accept this name in the Host header (repeatable; loopback names always are).")
@click.option("--log-level", default="warning", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@click.pass_obj
def http(state: State, host: str, port: int, api_key: str | None, origins: tuple[str, ...], hosts: tuple[str, ...], log_level: str) -> None:
    """Serve the HTTP APIs in the foreground (Ctrl-C stops it).

    Tools that speak OpenAI's API (chat completions, Responses) or Anthropic's
    Messages use base URL http://HOST:PORT/v1; Ollama's clients use
    http://HOST:PORT (with --port 11434, OLLAMA_HOST's default works as it is).
    Needs the 'http' extra: pip install 'impetus[http]'.
    """
    try:
        from .shim.app import Settings
        from .shim.security import allowed_hosts, is_loopback
        from .shim.serve import serve
    except ImportError as exc:
        raise click.ClickException(f"the HTTP shim needs the 'http' extra ({exc.name} is missing): pip install 'impetus[http]'") from None
    if not is_loopback(host) and not api_key:
        raise click.UsageError(f"--host {host} is reachable from other machines; set --api-key (or IMPETUS_API_KEY) to expose it")
    state.client().close()  # make sure the daemon runs (autostarting it) before serving
    settings = Settings(socket=str(state.config.socket), api_key=api_key or None, allowed_hosts=allowed_hosts(host, hosts), allow_origins=list(origins))

    def ready(bound_host: str, bound_port: int) -> None:
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        url = f"http://{shown}:{bound_port}/v1"
        if state.json:
            # one compact line, so scripts can read it while the server keeps running
            click.echo(msgspec.json.encode({"url": url, "host": bound_host, "port": bound_port, "socket": settings.socket}).decode())
        else:
            click.echo(f"OpenAI-compatible API on {url} (daemon: {settings.socket}); Ctrl-C stops it.")
        sys.stdout.flush()

    serve(settings, host, port, log_level, ready)


store_cmds.register(main, State)
embed_cmd.register(main, State)
dashboard_cmd.register(main, State)
service_commands.register(main, State)


@main.command()
@click.pass_obj
def doctor(state: State) -> None:
    """Check this machine: Python, accelerator, MLX, memory, disk, socket, daemon, service."""
    from .doctor import environment_note, run_checks

    checks = run_checks(state.config)
    if state.json:
        render.json_out({"environment": environment_note(), "checks": checks, "ok": all(c.status != "fail" for c in checks)})
    else:
        marks = {"pass": "ok  ", "warn": "warn", "fail": "FAIL"}
        click.echo(environment_note())
        for c in checks:
            click.echo(f"[{marks[c.status]}] {c.name}: {c.detail}")
            if c.fix:
                click.echo(f"       fix: {c.fix}")
    if any(c.status == "fail" for c in checks):
        sys.exit(1)


@main.command()
@click.option("--once", is_flag=True, help="Print one frame and exit (with --json: a snapshot).")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.2, 60), help="Seconds between refreshes.")
@click.pass_obj
def top(state: State, once: bool, interval: float) -> None:
    """Live view of loaded models, recent requests, CPU, memory and thermal state (Ctrl-C quits)."""
    import time as _time

    from rich.console import Console
    from rich.live import Live

    from .top import build, fetch

    with state.client() as client:
        if once or state.json:
            frame = fetch(client)
            render.json_out(frame) if state.json else Console().print(build(frame))
            return
        with Live(build(fetch(client)), auto_refresh=False, screen=False) as live:
            try:
                while True:
                    _time.sleep(interval)
                    live.update(build(fetch(client)), refresh=True)
            except KeyboardInterrupt:
                pass
