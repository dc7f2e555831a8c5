"""A loopback stand-in for the Hugging Face Hub, for tests that pull models.

A real HTTP server (stdlib ``ThreadingHTTPServer`` on 127.0.0.1, port chosen by
the OS) answering the endpoints the pull code and huggingface_hub use:

- ``GET /api/models/{repo}[/revision/{rev}]`` (``model_info``; with ``?blobs=true``
  each sibling has ``size``, ``blobId`` and, for LFS files, ``lfs.sha256``);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``,
  ``X-Linked-Etag``/``X-Linked-Size`` for LFS files, and ``Range: bytes=N-``
  answered with 206 and ``Content-Range``.

Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``, ``GatedRepo``), which is how huggingface_hub picks its
exception classes. Faults are injected per file pattern: drop the connection
after N body bytes, answer a status, throttle, flip a byte. Every request is
logged so tests can count transfers and see where each one started.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/?]+))?$")
DEFAULT_LFS: Callable[[str], bool] = lambda path: path.endswith((".gguf", ".safetensors", ".bin"))  # noqa: E731


@dataclass
class Logged:
    method: str
    path: str
    range_start: int | None
    status: int
    sent: int = 0


@dataclass
class _Fault:
    pattern: str
    kind: str
    value: int
    times: int | None

    def applies(self, path: str) -> bool:
        return (self.times is None or self.times > 0) and (fnmatch.fnmatch(path, self.pattern) or fnmatch.fnmatch(path.rsplit("/", 1)[-1], self.pattern))

    def use(self) -> None:
        if self.times is not None:
            self.times -= 1


class Faults:
    def __init__(self) -> None:
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self.stall_seconds = 0
        self.released = threading.Event()

    def drop_after(self, pattern: str, nbytes: int, times: int = 1) -> None:
        self._add(_Fault(pattern, "drop", nbytes, times))

    def status(self, pattern: str, code: int, times: int = 1) -> None:
        self._add(_Fault(pattern, "status", code, times))

    def slow(self, pattern: str, bytes_per_second: int) -> None:
        self._add(_Fault(pattern, "slow", bytes_per_second, None))

    def stall(self, pattern: str, after: int, seconds: int, times: int = 1) -> None:
        """Send ``after`` bytes of the body, then nothing for ``seconds``, then hang up."""
        self._add(_Fault(pattern, "stall", after, times))
        self.stall_seconds = seconds

    def hold(self, pattern: str, after: int) -> threading.Event:
        """Send ``after`` bytes of the body, then nothing until the returned event
        is set (by the test), then hang up: a transfer paused for as long as the
        test needs, whatever the machine's load."""
        self._add(_Fault(pattern, "hold", after, 1))
        self.released = threading.Event()
        return self.released

    def corrupt(self, pattern: str, offset: int, times: int = 1) -> None:
        self._add(_Fault(pattern, "corrupt", offset, times))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def take(self, path: str, kind: str) -> _Fault | None:
        with self._lock:
            for f in self._faults:
                if f.kind == kind and f.applies(path):
                    f.use()
                    return f
        return None


@dataclass
class _File:
    data: bytes
    lfs: bool
    advertised: int | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def git_sha1(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()  # noqa: S324 - git's object id

    @property
    def size(self) -> int:
        return self.advertised if self.advertised is not None else len(self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_sha1


@dataclass
class _Repo:
    gated: bool = False
    commits: dict[str, dict[str, _File]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def commit_for(self, rev: str) -> str | None:
        if rev in self.commits:
            return rev
        return self.refs.get(rev)


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.faults = Faults()
        self.requests: list[Logged] = []
        self.require_token: str | None = None
        self.hang = False  # accept every request and never answer (until stop)
        self._stopped = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self.faults.released.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_repo(
        self,
        repo: str,
        files: dict[str, bytes],
        *,
        revision: str = "main",
        gated: bool = False,
        lfs: Callable[[str], bool] = DEFAULT_LFS,
        advertised_sizes: dict[str, int] | None = None,
    ) -> str:
        """Add a commit holding ``files``; ``revision`` (a branch or tag) points at it.
        ``advertised_sizes`` makes the metadata claim other sizes (for disk checks)."""
        entry = self.repos.setdefault(repo, _Repo())
        entry.gated = entry.gated or gated
        commit = hashlib.sha1(f"{repo}:{len(entry.commits)}:{sorted(files)}".encode()).hexdigest()  # noqa: S324
        sizes = advertised_sizes or {}
        entry.commits[commit] = {p: _File(d, lfs(p), sizes.get(p)) for p, d in files.items()}
        entry.refs[revision] = commit
        return commit

    # --- serving ---------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                hub._serve(self, body=True)

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

        return Handler

    def _error(self, h: BaseHTTPRequestHandler, status: int, code: str | None, message: str, log: Logged) -> None:
        payload = json.dumps({"error": message}).encode()
        log.status = status
        h.send_response(status)
        if code:
            h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", message)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)

    def _authorized(self, h: BaseHTTPRequestHandler, repo: _Repo) -> bool:
        if not repo.gated:
            return True
        return self.require_token is not None and h.headers.get("Authorization") == f"Bearer {self.require_token}"

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = h.path.split("?", 1)[0]
        rng = h.headers.get("Range")
        start = int(rng.split("=", 1)[1].split("-", 1)[0]) if rng and rng.startswith("bytes=") else None
        log = Logged(h.command, path, start, 0)
        self.requests.append(log)
        if self.hang:
            self._stopped.wait()
            h.close_connection = True
            return
        if m := _INFO.match(path):
            self._info(h, m["repo"], m["rev"] or "main", log)
        elif m := _RESOLVE.match(path):
            self._file(h, m["repo"], m["rev"], m["path"], start, body, log)
        else:
            self._error(h, 404, None, "not found", log)

    def _lookup(self, h: BaseHTTPRequestHandler, repo_id: str, rev: str, log: Logged) -> tuple[str, dict[str, _File]] | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(h, 404, "RepoNotFound", "Repository not found", log)
            return None
        if not self._authorized(h, repo):
            self._error(h, 403, "GatedRepo", "Access to this model is restricted; you must accept its conditions", log)
            return None
        commit = repo.commit_for(rev)
        if commit is None:
            self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}", log)
            return None
        return commit, repo.commits[commit]

    def _info(self, h: BaseHTTPRequestHandler, repo_id: str, rev: str, log: Logged) -> None:
        found = self._lookup(h, repo_id, rev, log)
        if found is None:
            return
        commit, files = found
        siblings = []
        for name, f in sorted(files.items()):
            item: dict[str, Any] = {"rfilename": name, "size": f.size, "blobId": f.git_sha1}
            if f.lfs:
                item["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
            siblings.append(item)
        payload = json.dumps({
            "_id": commit[:24], "id": repo_id, "modelId": repo_id, "sha": commit, "private": False,
            "gated": "auto" if self.repos[repo_id].gated else False, "disabled": False, "downloads": 0, "likes": 0,
            "tags": [], "siblings": siblings, "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
        }).encode()
        log.status = 200
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)
            log.sent = len(payload)

    def _file(self, h: BaseHTTPRequestHandler, repo_id: str, rev: str, name: str, start: int | None, body: bool, log: Logged) -> None:
        found = self._lookup(h, repo_id, rev, log)
        if found is None:
            return
        commit, files = found
        f = files.get(name)
        if f is None:
            self._error(h, 404, "EntryNotFound", f"{name} does not exist at {rev}", log)
            return
        if fault := self.faults.take(name, "status"):
            self._error(h, fault.value, None, "injected failure", log)
            return
        data = f.data
        if body and (fault := self.faults.take(name, "corrupt")) and fault.value < len(data):
            data = data[: fault.value] + bytes([data[fault.value] ^ 0xFF]) + data[fault.value + 1:]
        offset = start or 0
        chunk = data[offset:]
        status = 206 if start else 200
        log.status = status
        h.send_response(status)
        h.send_header("X-Repo-Commit", commit)
        h.send_header("ETag", f'"{f.git_sha1}"')
        if f.lfs:
            h.send_header("X-Linked-Etag", f'"{f.sha256}"')
            h.send_header("X-Linked-Size", str(len(f.data)))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(chunk)))
        if start:
            h.send_header("Content-Range", f"bytes {offset}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if not body:
            return
        drop = self.faults.take(name, "drop")
        stall = self.faults.take(name, "stall")
        hold = self.faults.take(name, "hold")
        slow = self.faults.take(name, "slow")
        cut = drop or stall or hold
        limit = len(chunk) if cut is None else min(len(chunk), cut.value)
        step = 64 * 1024
        began = time.monotonic()
        try:
            for i in range(0, limit, step):
                piece = chunk[i:min(i + step, limit)]
                h.wfile.write(piece)
                log.sent += len(piece)
                if slow is not None:
                    ahead = log.sent / slow.value - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        if stall is not None:
            time.sleep(self.faults.stall_seconds)
        if hold is not None:
            self.faults.released.wait(120)
        if cut is not None:
            h.close_connection = True
            h.connection.shutdown(2)  # mid-body: the client sees the connection end early


def main() -> None:
    """Serve files as a repo, to try pulls by hand:
    ``python tests/fake_hub.py ORG/NAME FILE... [--slow BYTES_PER_S]``, then
    ``HF_ENDPOINT=<printed url> impetusctl pull ORG/NAME``."""
    import argparse
    from pathlib import Path

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("repo")
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--slow", type=int, help="throttle each file to this many bytes per second")
    args = ap.parse_args()
    hub = FakeHub().start()
    hub.add_repo(args.repo, {p.name: p.read_bytes() for p in args.files})
    if args.slow:
        hub.faults.slow("*", args.slow)
    print(hub.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
