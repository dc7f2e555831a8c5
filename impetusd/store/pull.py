"""``models.pull``: resolve, check space, transfer (retrying, resumable,
cancellable), verify, register. One job per model however many clients ask."""

from __future__ import annotations

import functools
import logging
import random
import shutil
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import anyio

from impetusd.observe.events import Event
from impetusd.protocol.api import FileProgress, PullParams, PullProgress, PullResult
from impetusd.protocol.errors import ChecksumMismatch, DiskFull, DownloadFailed, ImpetusError, NoMatchingFiles, ShuttingDown
from impetusd.store import cache, files, hub, names
from impetusd.store.detect import detect_format
from impetusd.store.hub import Transient
from impetusd.store.registry import ModelFile, ModelStore, Registered, Source
from impetusd.store.transfer import Cancelled, fetch, sha256_of
from impetusd.store.views import model_info

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus

    from impetusd.config import Config
    from impetusd.plugin.registries import ModelFormat, PluginRegistry

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKOFF_CAP_S = 60.0
DISK_MARGIN = 64 * 1024 * 1024


class Job:
    def __init__(self, ref: names.PullRef) -> None:
        self.ref = ref
        self.status: Literal["resolving", "queued", "downloading", "verifying", "registering"] = "resolving"
        self.files: list[FileProgress] = []
        self.cancel = threading.Event()
        self.done = anyio.Event()
        self.result: PullResult | None = None
        self.error: BaseException | None = None
        self.waiting = 0
        self.started = time.monotonic()
        self.samples: list[tuple[float, int]] = []

    @property
    def total(self) -> int:
        return sum(f.total for f in self.files)

    @property
    def completed(self) -> int:
        return sum(f.done for f in self.files)

    def rate(self) -> float:
        now, done = time.monotonic(), self.completed
        self.samples = [s for s in self.samples if now - s[0] <= 5.0] + [(now, done)]
        (t0, d0) = self.samples[0]
        return (done - d0) / (now - t0) if now > t0 else 0.0


class Waiter(Protocol):
    """A request waiting on a pull (dispatch's RequestContext): its id, its
    ``$/cancel``, and the notifications it is sent."""

    id: int | str | None
    cancel_requested: anyio.Event

    async def notify(self, method: str, params: Any) -> None: ...


class Pulls:
    """The pulls under way: one job per model, run in this service's own task
    group (started with ``tg.start(pulls.run)``) so a transfer outlives the
    request that began it."""

    def __init__(
        self,
        config: Config,
        store: ModelStore,
        formats: PluginRegistry[ModelFormat],
        emit: Callable[[Event], None],
        loaded: Callable[[str], bool],
    ) -> None:
        self.config = config
        self.store = store
        self.formats = formats
        self.emit = emit
        self.loaded = loaded  # whether a model is loaded now, for ModelInfo
        self.jobs: dict[str, Job] = {}
        self.slots = anyio.Semaphore(max(1, config.max_concurrent_pulls))
        self._tg: TaskGroup | None = None
        self.blob_locks: dict[str, anyio.Lock] = {}  # two models sharing a file: one transfer, the other waits

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Hold the jobs' task group until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._tg = None

    def cancel_all(self) -> None:
        for job in self.jobs.values():
            job.cancel.set()

    async def pull(self, params: PullParams, ctx: Waiter) -> PullResult:
        ref = names.parse(params.model)
        existing = self.store.get(ref.name)
        if existing is not None and not params.force:
            return PullResult(
                status="already_registered", model=model_info(existing, loaded=self.loaded(existing.name)), downloaded_bytes=0, reused_bytes=0, elapsed_s=0.0
            )
        job = self.jobs.get(ref.name)
        if job is not None and job.cancel.is_set():  # being cancelled: let it end, then start afresh
            await job.done.wait()
            job = self.jobs.get(ref.name)
        if job is None:
            if self._tg is None:
                raise ShuttingDown("the daemon is shutting down; pulls are not taken")
            job = self.jobs[ref.name] = Job(ref)
            self._tg.start_soon(self._run, job, params.force)
        job.waiting += 1
        try:
            while not job.done.is_set():
                if ctx.cancel_requested.is_set():
                    break
                await self._report(job, ctx)
                with anyio.move_on_after(0.25):
                    await job.done.wait()
        finally:
            job.waiting -= 1
            if ctx.cancel_requested.is_set() and job.waiting == 0 and not job.done.is_set():
                job.cancel.set()  # nobody wants it any more: stop the transfer, keep the partials
        if not job.done.is_set() or (job.result is None and job.error is None):
            return PullResult(
                status="cancelled", model=None, downloaded_bytes=job.completed, reused_bytes=0, elapsed_s=round(time.monotonic() - job.started, 3)
            )
        if job.error is not None:
            raise job.error
        assert job.result is not None
        await self._report(job, ctx)  # the last word: every byte accounted for
        return job.result

    async def _report(self, job: Job, ctx: Waiter) -> None:
        await ctx.notify(
            "models.progress",
            PullProgress(
                id=ctx.id, model=job.ref.name, status=job.status, done=job.completed, total=job.total, rate_bps=round(job.rate(), 1), files=list(job.files)
            ),
        )

    async def _run(self, job: Job, force: bool) -> None:
        name = job.ref.name
        try:
            job.result = await self._pull(job, force)
        except Cancelled:
            log.info("pull of %s cancelled; partial files kept for the next pull", name)
        except BaseException as exc:
            job.error = exc
            if not isinstance(exc, ImpetusError):
                log.exception("pull of %s failed", name)
                job.error = DownloadFailed(f"pull of {name} failed: {type(exc).__name__}: {exc}", model=name)
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                raise
        finally:
            self.jobs.pop(name, None)
            job.done.set()

    async def _pull(self, job: Job, force: bool) -> PullResult:
        """List the repo, choose its files, check the disk, fetch what the cache lacks, verify, register."""
        remote, chosen = await self._choose(job)
        job.files = [FileProgress(name=f.name, total=f.size) for f in chosen.files]
        missing = _missing(job, chosen, force)
        _check_space(job.ref, missing)
        downloaded = await self._download(job, remote, missing, force)
        job.status = "verifying"
        stored = await _verify(job, remote, chosen)
        cache.record_ref(job.ref.repo, remote.revision, remote.commit)
        job.status = "registering"
        model = self._register(job.ref, remote, chosen, stored)
        self.emit(Event(kind="model.pulled", model=job.ref.name, data={"bytes": downloaded}))
        return PullResult(
            status="pulled",
            model=model_info(model, loaded=self.loaded(model.name)),
            downloaded_bytes=downloaded,
            reused_bytes=model.size_bytes - downloaded,
            elapsed_s=round(time.monotonic() - job.started, 3),
        )

    async def _choose(self, job: Job) -> tuple[hub.RemoteRepo, files.Selection]:
        """The repo's listing and the files the pull takes from it. A suffix that is not a
        quantization in the repo names a revision."""
        ref = job.ref
        timeout = self.config.pull_timeout_s
        remote = await self._retry(job, lambda: hub.describe(ref.repo, ref.revision, timeout), "listing")
        selector = ref.suffix
        if selector and not files.selects_files(remote.files, selector):
            # not a quantization in this repo: it names a revision
            if ref.revision:
                raise NoMatchingFiles(f"{ref.repo}@{ref.revision} has no GGUF matching {selector!r}", repo=ref.repo)
            remote = await self._retry(job, lambda: hub.describe(ref.repo, selector, timeout), "listing")
            selector = None
        return remote, files.choose(ref.repo, remote.files, selector, ref.files)

    async def _download(self, job: Job, remote: hub.RemoteRepo, missing: list[tuple[files.RemoteFile, FileProgress]], force: bool) -> int:
        """Fetch the ``missing`` files, ``max_concurrent_pulls`` pulls at a time (one transfer
        per blob); the bytes downloaded."""
        ref = job.ref
        job.status = "queued"
        downloaded = 0
        async with self.slots:
            job.status = "downloading"
            headers = hub.auth_headers()
            for f, p in missing:
                if job.cancel.is_set():
                    raise Cancelled()
                url = hub.file_url(ref.repo, f.name, remote.commit)
                blob, part = cache.blob(ref.repo, f.etag), cache.partial(ref.repo, f.etag)
                async with self.blob_locks.setdefault(str(blob), anyio.Lock()):
                    if force:
                        blob.unlink(missing_ok=True)
                    elif blob.exists():  # another pull fetched it meanwhile
                        p.done, p.state = f.size, "cached"
                        continue
                    await self._retry(
                        job, functools.partial(fetch, ref.repo, url, headers, f, blob, part, p, job.cancel, self.config.pull_timeout_s), f.name, progress=p
                    )
                downloaded += f.size
        return downloaded

    def _register(self, ref: names.PullRef, remote: hub.RemoteRepo, chosen: files.Selection, stored: list[ModelFile]) -> Registered:
        """Register the pulled model under its name (replacing an earlier pull of it)."""
        primary = cache.snapshot(ref.repo, remote.commit, chosen.primary)
        fmt, metadata = detect_format(self.formats, primary)
        model = Registered(
            name=ref.name,
            format=fmt,
            path=str(primary),
            source=Source(kind="hub", repo=ref.repo, revision=remote.revision, commit=remote.commit),
            metadata=metadata,
            size_bytes=sum(f.size for f in stored),
            digest=content_digest(stored),
            created_at=time.time(),
            files=stored,
        )
        self.store.add(model, replace=True)
        return model

    async def _retry(self, job: Job, work: Callable[[], T], what: str, progress: FileProgress | None = None) -> T:
        """Run blocking ``work`` in a thread; retry Transient failures with
        exponential backoff and full jitter, resuming from what is on disk."""
        cfg = self.config
        for attempt in range(1, cfg.pull_attempts + 1):
            try:
                # Abandoned when this task is cancelled (only at shutdown): the
                # thread is told to stop at its next chunk, and a thread stuck in
                # a network read must not hold the daemon (its timeout ends it).
                return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
            except anyio.get_cancelled_exc_class():
                job.cancel.set()
                raise
            except (Transient, ChecksumMismatch) as exc:
                if attempt == cfg.pull_attempts:
                    if isinstance(exc, ChecksumMismatch):
                        raise
                    raise DownloadFailed(f"{job.ref.name}: {what} failed {attempt} times; last: {exc}. Pull again to resume", model=job.ref.name) from exc
                delay = random.uniform(0, min(BACKOFF_CAP_S, cfg.pull_backoff_s * 2 ** (attempt - 1)))
                log.warning("pull %s: %s failed (%s); retry %d in %.1f s", job.ref.name, what, exc, attempt, delay)
                if progress is not None:
                    progress.state = "retrying"
                with anyio.move_on_after(delay):
                    while not job.cancel.is_set():
                        await anyio.sleep(0.05)
                if job.cancel.is_set():
                    raise Cancelled() from None
        raise AssertionError("unreachable")


def _missing(job: Job, chosen: files.Selection, force: bool) -> list[tuple[files.RemoteFile, FileProgress]]:
    """The chosen files the cache lacks (all of them when ``force``), with their progress;
    the others are marked cached."""
    missing = []
    for f, p in zip(chosen.files, job.files, strict=True):
        if cache.blob(job.ref.repo, f.etag).exists() and not force:
            p.done, p.state = f.size, "cached"
        else:
            missing.append((f, p))
    return missing


def _check_space(ref: names.PullRef, missing: list[tuple[files.RemoteFile, FileProgress]]) -> None:
    """``DiskFull`` unless the Hub cache's disk holds what is still to fetch (partials
    count as fetched), with a margin."""
    need = sum(f.size - (cache.partial(ref.repo, f.etag).stat().st_size if cache.partial(ref.repo, f.etag).exists() else 0) for f, _ in missing)
    root = cache.hub_cache()
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if need + DISK_MARGIN > free:
        raise DiskFull(
            f"pulling {ref.name} needs {need / 1e9:.2f} GB more in {root}, and {free / 1e9:.2f} GB is free",
            needed_bytes=need,
            free_bytes=free,
            path=str(root),
        )


async def _verify(job: Job, remote: hub.RemoteRepo, chosen: files.Selection) -> list[ModelFile]:
    """Each chosen file as stored: its snapshot link and sha256 (a file just fetched was
    hashed on the way; a cached one is hashed now), checked against the Hub's."""
    ref, stored = job.ref, []
    for f, p in zip(chosen.files, job.files, strict=True):
        location = cache.link(ref.repo, remote.commit, f.name, f.etag)
        blob = cache.blob(ref.repo, f.etag)
        digest = f.sha256 if p.state == "done" and f.sha256 else await anyio.to_thread.run_sync(sha256_of, blob, job.cancel)
        if f.sha256 and digest != f.sha256:
            raise ChecksumMismatch(f"{ref.repo}/{f.name} in the cache does not match the Hub's sha256", repo=ref.repo, file=f.name)
        stored.append(ModelFile(name=f.name, location=str(location), size=f.size, sha256=digest))
    return stored


def content_digest(files: list[ModelFile]) -> str:
    """One sha256 naming the whole model: over each file's name and sha256."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.name):
        h.update(f"{f.name}\0{f.sha256}\n".encode())
    return h.hexdigest()
