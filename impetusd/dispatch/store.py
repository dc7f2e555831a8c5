"""``models.pull/import/show/remove/copy/verify``: the store's RPC methods."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from impetusd.dispatch.context import RequestContext
from impetusd.plugin.registries import MethodSpec
from impetusd.protocol.api import (
    CopyParams,
    FileCheck,
    ImportParams,
    ModelCheck,
    ModelInfo,
    NameParams,
    PullParams,
    PullResult,
    RemoveParams,
    RemoveResult,
    VerifyParams,
    VerifyResult,
)
from impetusd.protocol.errors import InvalidParams, ModelExists, ModelInUse
from impetusd.store import cache
from impetusd.store.convert import convert_into_store, remove_converted
from impetusd.store.detect import detect_format
from impetusd.store.names import check_name, check_not_alias, default_name
from impetusd.store.pull import content_digest
from impetusd.store.registry import ModelFile, Registered, Source
from impetusd.store.transfer import sha256_of
from impetusd.store.views import model_info

if TYPE_CHECKING:
    from impetusd.dispatch.services import Services


async def models_pull(services: Services, params: PullParams, ctx: RequestContext) -> PullResult:
    ctx.cooperative = True  # $/cancel stops waiting (and the transfer, when nobody else waits)
    return await services.pulls.pull(params, ctx)


def _info(services: Services, model: Registered) -> ModelInfo:
    return model_info(model, loaded=model.name in services.residency.resident)


def _model_files(path: Path, metadata: dict) -> list[Path]:
    if path.is_file():
        return [path]
    listed = metadata.get("files")
    if isinstance(listed, list) and listed:
        return [path / str(name) for name in listed]
    return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))


async def models_import(services: Services, params: ImportParams, ctx: RequestContext) -> ModelInfo:
    path = Path(params.path).expanduser().resolve()
    if not path.exists():
        raise InvalidParams(f"{path} does not exist", field="path")
    if params.allow_pickle:
        raise InvalidParams("Invalid params: pickles are never loaded; convert_pickle converts one once to safetensors", field="allow_pickle")
    name = check_name(params.name) if params.name is not None else default_name(path.stem if path.is_file() else path.name)
    check_not_alias(name)
    if services.store.get(name) is not None:
        raise ModelExists(f"a model named {name!r} is already registered; choose another with --name", model=name)
    source = Source(kind="local", path=str(path))
    if params.convert_pickle:
        source = Source(kind="converted", path=str(path))
        path = await convert_into_store(services.registries.formats, services.config.home, path, name)
    try:
        return await _register(services, path, name, source)
    except BaseException:
        if params.convert_pickle:
            shutil.rmtree(path, ignore_errors=True)
        raise


async def _register(services: Services, path: Path, name: str, source: Source) -> ModelInfo:
    fmt, metadata = detect_format(services.registries.formats, path)
    files = []
    for file in _model_files(path, metadata):
        digest = await anyio.to_thread.run_sync(sha256_of, file)
        files.append(
            ModelFile(name=file.relative_to(path).as_posix() if path.is_dir() else file.name, location=str(file), size=file.stat().st_size, sha256=digest)
        )
    model = Registered(
        name=name,
        format=fmt,
        path=str(path),
        source=source,
        metadata=metadata,
        size_bytes=sum(f.size for f in files),
        digest=content_digest(files),
        created_at=time.time(),
        files=files,
    )
    services.store.add(model)
    return _info(services, model)


def models_show(services: Services, params: NameParams, ctx: RequestContext) -> ModelInfo:
    return _info(services, services.store.require(params.model))


async def models_remove(services: Services, params: RemoveParams, ctx: RequestContext) -> RemoveResult:
    store = services.store
    model = store.require(params.model)
    unloaded = False
    if model.name in services.residency.resident:
        if not params.force:
            raise ModelInUse(f"{model.name} is loaded; unload it first or use --force", model=model.name)
        await services.residency.unload(model.name)
        unloaded = True
    store.remove(model.name)
    freed: list[str] = []
    freed_bytes = 0
    if model.source.kind == "converted" and not any(store.users_of(f.location) for f in model.files):
        freed, freed_bytes = remove_converted(services.config.home, Path(model.path))
    if model.source.kind == "hub":  # only ever delete inside the Hub cache, never a user's own files
        root = cache.repo_folder(model.source.repo or "")
        for f in model.files:
            link = Path(f.location)
            if store.users_of(f.location) or root not in link.parents:
                continue
            target = link.resolve()
            link.unlink(missing_ok=True)
            if target.exists() and root in target.parents and not _still_linked(root, target):
                freed_bytes += target.stat().st_size
                target.unlink()
                freed.append(f.name)
    return RemoveResult(name=model.name, unloaded=unloaded, freed_bytes=freed_bytes, freed_files=freed)


def _still_linked(root: Path, blob: Path) -> bool:
    """Whether any snapshot (another revision, another tool's) still points at ``blob``."""
    snapshots = root / "snapshots"
    return snapshots.exists() and any(p.is_symlink() and p.resolve() == blob for p in snapshots.rglob("*"))


def models_copy(services: Services, params: CopyParams, ctx: RequestContext) -> ModelInfo:
    check_not_alias(check_name(params.destination, field="destination"))
    return _info(services, services.store.copy(params.source, params.destination))


def _check(model: Registered) -> ModelCheck:
    checks = []
    for f in model.files:
        location = Path(f.location)
        if not location.exists():
            checks.append(FileCheck(name=f.name, location=f.location, ok=False, problem="missing"))
            continue
        size = location.stat().st_size
        if size != f.size:
            checks.append(FileCheck(name=f.name, location=f.location, ok=False, problem=f"size {size} != {f.size}"))
            continue
        digest = sha256_of(location)
        problem = None if digest == f.sha256 else f"sha256 {digest} != {f.sha256}"
        checks.append(FileCheck(name=f.name, location=f.location, ok=problem is None, problem=problem))
    return ModelCheck(name=model.name, ok=all(c.ok for c in checks), files=checks)


async def models_verify(services: Services, params: VerifyParams, ctx: RequestContext) -> VerifyResult:
    models = [services.store.require(params.model)] if params.model else services.store.all()
    results = [await anyio.to_thread.run_sync(_check, m) for m in models]
    return VerifyResult(ok=all(r.ok for r in results), models=results)


STORE_METHODS = (
    MethodSpec(
        "models.pull",
        PullParams,
        PullResult,
        models_pull,
        "Download a model from the Hub (alias, org/repo, org/repo:QUANT or :REVISION), verify and register it; sends models.progress notifications.",
        stream=True,
    ),
    MethodSpec("models.import", ImportParams, ModelInfo, models_import, "Register a local GGUF file or model folder under a name."),
    MethodSpec("models.show", NameParams, ModelInfo, models_show, "Everything known about a registered model: format, metadata, files, digests, source."),
    MethodSpec("models.remove", RemoveParams, RemoveResult, models_remove, "Forget a registered model; frees Hub-cache files no other model uses."),
    MethodSpec("models.copy", CopyParams, ModelInfo, models_copy, "Register the same files under a second name."),
    MethodSpec("models.verify", VerifyParams, VerifyResult, models_verify, "Rehash a model's files (or every model's) against the registry."),
)
