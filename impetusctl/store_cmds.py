"""``pull``, ``import``, ``show``, ``rm``, ``cp``, ``verify``: the model store from the CLI."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click
import msgspec
from tqdm import tqdm

from impetusd.protocol.api import ModelInfo, PullProgress, PullResult, RemoveResult, VerifyResult

from . import render


class PullBar:
    """A byte progress bar on stderr fed by ``models.progress`` notifications."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.bar: tqdm | None = None
        self.decoder = msgspec.json.Decoder(PullProgress)

    def __call__(self, method: str, raw: msgspec.Raw) -> None:
        if method != "models.progress":
            return
        p = self.decoder.decode(bytes(raw))
        if self.bar is None and p.total:
            self.bar = tqdm(total=p.total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"pulling {self.model}", file=sys.stderr, dynamic_ncols=True)
        if self.bar is not None:
            self.bar.total = p.total
            self.bar.n = p.done
            self.bar.set_postfix_str(p.status, refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def pull_with_progress(client: Any, model: str, *, force: bool = False, quiet: bool = False) -> PullResult:
    """``models.pull`` with a progress bar; Ctrl-C cancels (the partial stays)."""
    bar = PullBar(model)
    rid = client.send("models.pull", {"model": model, "force": force})
    assert rid is not None
    on_note = None if quiet else bar
    try:
        raw = client.wait(rid, on_note)
    except KeyboardInterrupt:
        client.cancel(rid)  # the daemon stops the transfer at its next chunk and answers
        raw = client.wait(rid, on_note)
    finally:
        bar.close()
    return msgspec.json.decode(bytes(raw), type=PullResult)


def looks_pullable(model: str) -> bool:
    from impetusd.local import parse_name as parse
    from impetusd.protocol.errors import ImpetusError

    if os.path.exists(model):
        return False
    try:
        parse(model)
    except ImpetusError:
        return False
    return True


def _count(n: Any) -> str | None:
    if not isinstance(n, int) or n <= 0:
        return None
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit} ({n:,})"
    return str(n)


def _report_pull(model: str, result: PullResult) -> None:
    if result.status == "cancelled":
        click.echo(f"pull of {model} cancelled after {render.size(result.downloaded_bytes)}; run the same command to resume", err=True)
    elif result.status == "already_registered":
        click.echo(f"{model} is already registered (use --force to fetch and verify again)")
    else:
        m = result.model
        assert m is not None
        transfer = f"{render.size(result.downloaded_bytes)} downloaded, {render.size(result.reused_bytes)} reused"
        click.echo(f"pulled {m.name}: {m.format}, {render.size(m.size_bytes)} ({transfer}) in {result.elapsed_s:.1f} s, verified")


def _show_rows(info: ModelInfo) -> list[tuple[str, Any]]:
    """``show``'s lines: the common ones, and after the architecture those the format reports."""
    meta = info.metadata
    rows = [
        ("name", info.name),
        ("format", info.format),
        ("architecture", meta.get("architecture")),
        ("parameters", _count(meta.get("parameters") or meta.get("parameter_count"))),
        ("quantization", meta.get("quantization") or meta.get("file_type")),
        ("context length", meta.get("context_length")),
        ("chat template", "yes" if meta.get("chat_template") else "no"),
        ("size", render.size(info.size_bytes)),
        ("source", info.source),
        ("digest", info.digest),
        ("path", info.path),
        ("registered", time.strftime("%Y-%m-%d %H:%M", time.localtime(info.created_at))),
    ]
    opset = meta.get("opset")
    producer = " ".join(str(meta[k]) for k in ("producer_name", "producer_version") if meta.get(k)) or None
    extra = [  # shown only when the format reports them (embedding, ONNX, Core ML models)
        ("kind", meta.get("kind")),
        ("producer", producer),
        ("opset", ", ".join(f"{d} {v}" for d, v in opset.items()) if isinstance(opset, dict) and opset else None),
        ("model type", meta.get("model_type")),
        ("spec version", meta.get("specification_version")),
    ]
    rows[3:3] = [(k, v) for k, v in extra if v is not None]
    return rows


def _report_verify(result: VerifyResult) -> None:
    for m in result.models:
        click.echo(f"{m.name}: {'ok' if m.ok else 'FAILED'}")
        for f in m.files:
            if not f.ok:
                click.echo(f"  {f.name}: {f.problem}")
    if not result.models:
        click.echo("no registered models")


def _add_pull(main: click.Group, pass_state: Any) -> None:
    @main.command()
    @click.argument("model")
    @click.option("--force", is_flag=True, help="Fetch and verify again even if already registered.")
    @pass_state
    def pull(state: Any, model: str, force: bool) -> None:
        """Download MODEL from the Hugging Face Hub, verify it and register it.

        MODEL is an alias (smollm2-135m), org/repo, org/repo:QUANT (a GGUF
        quantization such as Q4_K_M) or org/repo:REVISION. Ctrl-C stops the
        transfer; pulling again resumes it.
        """
        with state.client() as client:
            result = pull_with_progress(client, model, force=force, quiet=state.json)
        if state.json:
            render.json_out(result)
        else:
            _report_pull(model, result)
        if result.status == "cancelled":
            sys.exit(130)


def _add_import(main: click.Group, pass_state: Any) -> None:
    @main.command("import")
    @click.argument("path", type=click.Path(exists=True))
    @click.option("--name", help="Register under this name (default: the file or folder name).")
    @click.option(
        "--convert-pickle", is_flag=True, help="Convert a PyTorch .bin/.pt checkpoint once to SafeTensors in the store (needs torch; see IMPETUS_TORCH_PYTHON)."
    )
    @pass_state
    def import_(state: Any, path: str, name: str | None, convert_pickle: bool) -> None:
        """Register a local GGUF file, MLX folder or SafeTensors folder.

        PyTorch pickle checkpoints are refused (loading one runs code) unless
        --convert-pickle converts them with torch.load(weights_only=True) in a
        separate process; the converted copy is what gets registered.
        """
        params: dict[str, Any] = {"path": str(click.format_filename(path)), **({"name": name} if name else {})}
        if convert_pickle:
            params["convert_pickle"] = True
        with state.client() as client:
            info = client.call("models.import", params, type=ModelInfo)
        render.json_out(info) if state.json else click.echo(f"imported {info.name}: {info.format}, {render.size(info.size_bytes)}, {len(info.files)} file(s)")


def _add_show(main: click.Group, pass_state: Any) -> None:
    @main.command()
    @click.argument("model")
    @pass_state
    def show(state: Any, model: str) -> None:
        """Show a registered model: format, architecture, size, files, source, digests."""
        with state.client() as client:
            info = client.call("models.show", {"model": model}, type=ModelInfo)
        if state.json:
            render.json_out(info)
            return
        for key, value in _show_rows(info):
            click.echo(f"{key + ':':16}{'-' if value is None else value}")
        click.echo("files:")
        for f in info.files:
            click.echo(f"  {f.name}  {render.size(f.size)}  sha256:{f.sha256}")


def _add_remove(main: click.Group, pass_state: Any) -> None:
    @main.command("rm")
    @click.argument("model")
    @click.option("--force", is_flag=True, help="Unload the model first if it is loaded.")
    @pass_state
    def remove(state: Any, model: str, force: bool) -> None:
        """Forget MODEL; frees downloaded files no other model uses."""
        with state.client() as client:
            result = client.call("models.remove", {"model": model, "force": force}, type=RemoveResult)
        render.json_out(result) if state.json else click.echo(
            f"removed {result.name}" + (f", freed {render.size(result.freed_bytes)}" if result.freed_bytes else "")
        )


def _add_copy(main: click.Group, pass_state: Any) -> None:
    @main.command("cp")
    @click.argument("source")
    @click.argument("destination")
    @pass_state
    def copy(state: Any, source: str, destination: str) -> None:
        """Register SOURCE's files again under the name DESTINATION."""
        with state.client() as client:
            info = client.call("models.copy", {"source": source, "destination": destination}, type=ModelInfo)
        render.json_out(info) if state.json else click.echo(f"copied {source} to {info.name}")


def _add_verify(main: click.Group, pass_state: Any) -> None:
    @main.command()
    @click.argument("model", required=False)
    @pass_state
    def verify(state: Any, model: str | None) -> None:
        """Rehash MODEL's files (or every registered model's) and report; exit 1 on any mismatch."""
        with state.client() as client:
            result = client.call("models.verify", {"model": model} if model else {}, type=VerifyResult)
        if state.json:
            render.json_out(result)
        else:
            _report_verify(result)
        if not result.ok:
            sys.exit(1)


def register(main: click.Group, state_type: Any) -> None:
    """Add the store's commands to ``main``; they find impetusctl's state as a ``state_type``."""
    pass_state = click.make_pass_decorator(state_type)
    for add in (_add_pull, _add_import, _add_show, _add_remove, _add_copy, _add_verify):
        add(main, pass_state)
