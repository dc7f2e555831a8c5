"""Protocol fuzzing under load: malformed frames at a real daemon while a valid client streams.

Prints one JSON object: frames sent by category, the daemon's answers by error
name (``InternalError`` would be a bug), daemon crashes (must be 0), daemon RSS
before/after, and the valid client's latency (p50/p99) without and with the fuzz:
per request, and between consecutive streamed chunks (the engine paces them).

Usage: .venv/bin/python bench/fuzz.py [--frames 10000] [--rate 2000] [--seed 0]

Frames are generated up front from a seeded ``random.Random`` (bad UTF-8, deep
nesting, huge numbers, wrong types, bad params for real methods, truncations,
junk batches, long strings, one 64 MB line) and sent by a separate process over
several connections that read every answer. The valid client streams ``chat``
from the echo test backend (tests/plugins/impetus_echo.py), so the figures are
about the daemon, not a model. Compare the ratio; these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import re
import socket
import statistics
import threading
import time
from collections import Counter
from typing import Any

from daemon_harness import Daemon, ValidClient

BIG_LINE = 64 * 1024 * 1024
NAME = re.compile(rb'"data":\{"name":"(\w+)"')
CATEGORIES = (
    "bad_utf8",
    "deep_nesting",
    "huge_number",
    "wrong_type",
    "bad_params",
    "random_json",
    "truncated",
    "junk_batch",
    "odd_method",
    "bad_cancel",
    "long_string",
    "control_bytes",
)


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 2**31, 2**63 - 1, -(2**63), 2**64, 1.5, -0.0, 1e308])
    if kind == 2:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(12)))
    if kind in (3, 4):
        return rng.choice(["", "chat", "2.0", "models.load", "$/cancel", "\u0000", "smollm2-135m"])
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["jsonrpc", "id", "method", "params", "model", "messages", "x"]): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def make_frame(rng: random.Random, category: str) -> bytes:
    """One malformed (or at least unwelcome) line, without its newline."""
    rid = rng.randrange(1, 10**6)
    if category == "bad_utf8":
        junk = bytes(rng.choice([0xC3, 0x28, 0xFF, 0xFE, 0xED, 0xA0, 0x80, 0xF8]) for _ in range(rng.randrange(1, 12)))
        return rng.choice(
            [
                b'{"jsonrpc":"2.0","id":%d,"method":"' % rid + junk + b'"}',
                b'{"jsonrpc":"2.0","id":%d,"method":"chat","params":{"model":"' % rid + junk + b'","messages":[]}}',
                junk,
            ]
        )
    if category == "deep_nesting":
        depth = rng.choice([64, 1000, 10_000, 100_000, 500_000])
        opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        inner = opener * depth + b"1" + closer * depth if opener != b"[" else opener * depth + closer * depth
        return rng.choice([inner, b'{"jsonrpc":"2.0","id":%d,"method":"chat","params":' % rid + inner + b"}"])
    if category == "huge_number":
        number = rng.choice([b"9" * rng.randrange(20, 5000), b"1e999999", b"-1e-999999", b"1" + b"0" * 400 + b".5", b"NaN", b"Infinity"])
        field = rng.choice([b'"id":', b'"params":{"model":"m","messages":[],"max_tokens":', b'"params":{"id":'])
        tail = b"}}" if field.startswith(b'"params"') else b"}"
        method = b"$/cancel" if b'"id":' in field and field.startswith(b'"params') else b"chat"
        return b'{"jsonrpc":"2.0","method":"' + method + b'",' + field + number + tail
    if category == "wrong_type":
        base: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": "chat", "params": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}
        key = rng.choice(["jsonrpc", "id", "method", "params"])
        base[key] = rng.choice([None, 1, 1.5, True, [], {}, "x", [1, 2], {"a": 1}])
        return _json(base)
    if category == "bad_params":
        method = rng.choice(["chat", "complete", "models.load", "models.unload", "models.list", "daemon.info", "echo.ping"])
        params = rng.choice(
            [
                {"model": "smollm2-135m", "messages": 5},
                {"model": "m", "messages": [{"role": "wizard", "content": "x"}]},
                {"model": "m", "messages": [{"role": "user"}]},
                {"model": 7, "prompt": "x"},
                {"model": "m", "prompt": "x", "temperature": "hot"},
                {"model": "m", "prompt": "x", "max_tokens": -5},
                {"model": "m", "prompt": "x", "stop": ["a"] * 1000},
                {"model": "m", "prompt": "x", "keep_alive": "forever-ish"},
                {"model": "/", "prompt": "x"},
                {"model": "/etc/passwd", "prompt": "x"},
                {"model": "../../../../etc/shadow", "prompt": "x"},
                {"model": "no\u0000such", "prompt": "x"},
                {"model": "m" * 5000, "prompt": "x"},
                {"model": "m", "messages": [], "frequency_penalty": 2},
                [1, 2, 3],
                "params as a string",
            ]
        )
        return _json({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
    if category == "random_json":
        return _json(_random_json(rng))
    if category == "truncated":
        whole = _json({"jsonrpc": "2.0", "id": rid, "method": "chat", "params": {"model": "m", "messages": [{"role": "user", "content": "hello"}]}})
        return whole[: rng.randrange(1, len(whole))]
    if category == "junk_batch":
        return _json([_random_json(rng) for _ in range(rng.randrange(1, 40))])
    if category == "odd_method":
        method = rng.choice(["", " ", "daemon.", "models..load", "x" * 100_000, "chat\u0000", "$/", "$/cancel/extra", "ünïcödé.method"])
        return _json({"jsonrpc": "2.0", "id": rid, "method": method})
    if category == "bad_cancel":
        target = rng.choice([None, [], {}, 1.5, "x" * 1000, 2**80, True])
        return _json({"jsonrpc": "2.0", "method": "$/cancel", "params": {"id": target}})
    if category == "long_string":
        return _json({"jsonrpc": "2.0", "id": rid, "method": "echo.ping", "params": {"text": "y" * rng.choice([10_000, 1_000_000])}})
    if category == "control_bytes":
        return bytes(rng.randrange(0, 32) for _ in range(rng.randrange(1, 64))).replace(b"\n", b"\r")
    raise ValueError(category)


def make_frames(n: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    return [(c, make_frame(rng, c)) for c in (rng.choice(CATEGORIES) for _ in range(n))]


def _fuzz_process(sock: str, frames: int, seed: int, conns: int, rate: float, big_line: bool, ready: Any, stop: Any, sent: Any, out: Any) -> None:
    """Separate process: send frames over ``conns`` connections, read every answer."""
    pool = make_frames(frames, seed)
    per_conn = [pool[i::conns] for i in range(conns)]
    answers: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    lock = threading.Lock()
    ready.set()

    def reader(s: socket.socket) -> None:
        # Count answers by error name with a scan rather than a full parse, to keep
        # this process's CPU (which competes with the daemon's) low.
        buf = s.makefile("rb")
        try:
            for line in buf:
                names = NAME.findall(line)
                results = line.count(b'"result":')
                with lock:
                    for name in names:
                        answers[name.decode()] += 1
                    answers["result"] += results
                    if not names and not results:
                        answers["<unrecognised answer>"] += 1
        except OSError:
            pass

    def sender(mine: list[tuple[str, bytes]]) -> None:
        interval = conns / rate if rate else 0.0
        i = 0
        s = None
        next_at = time.monotonic()
        while not (stop.is_set() and i >= len(mine)):
            if s is None:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(sock)
                threading.Thread(target=reader, args=(s,), daemon=True).start()
            category, frame = mine[i % len(mine)]
            try:
                s.sendall(frame + b"\n")
            except OSError:  # the daemon closed this connection (e.g. an oversized line): reconnect
                s.close()
                s = None
                continue
            with lock:
                categories[category] += 1
            with sent.get_lock():
                sent.value += 1
            i += 1
            if interval:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        if s is not None:
            time.sleep(0.5)  # let the last answers arrive
            s.close()

    threads = [threading.Thread(target=sender, args=(chunk,)) for chunk in per_conn]
    for t in threads:
        t.start()
    if big_line:  # once: a 64 MB line, refused with MessageTooLarge before it is buffered whole
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock)
        threading.Thread(target=reader, args=(s,), daemon=True).start()
        try:
            s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"echo.ping","params":{"text":"' + b"z" * BIG_LINE + b'"}}\n')
        except OSError:
            pass
        with lock:
            categories["64MB_line"] += 1
        time.sleep(0.5)
        s.close()
    for t in threads:
        t.join()
    out.put({"categories": dict(categories), "answers": dict(answers)})


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(
    frames: int = 10_000, rate: float = 2000.0, seed: int = 0, conns: int = 4, baseline: int = 40, big_line: bool = True, token_s: float = 0.01
) -> dict[str, Any]:
    with Daemon() as daemon:
        client = ValidClient(daemon.socket, daemon.echo_model(token_s))
        client.warm_up()
        client.gaps.clear()
        before = [client.request() for _ in range(baseline)]
        gaps_before, client.gaps = client.gaps, []
        rss_before = daemon.rss()
        ctx = mp.get_context("spawn")
        ready, stop, sent, out = ctx.Event(), ctx.Event(), ctx.Value("l", 0), ctx.Queue()
        proc = ctx.Process(target=_fuzz_process, args=(str(daemon.socket), frames, seed, conns, rate, big_line, ready, stop, sent, out))
        proc.start()
        ready.wait(120)
        during: list[float] = []
        rss_peak = rss_before
        started = time.monotonic()
        while sent.value < frames or len(during) < baseline:
            during.append(client.request())
            if len(during) % 20 == 0:
                rss_peak = max(rss_peak, daemon.rss())
            if not proc.is_alive():
                break
        stop.set()
        gaps_during, client.gaps = client.gaps, []
        report = out.get(timeout=120)
        proc.join(30)
        fuzz_s = time.monotonic() - started
        time.sleep(1.0)
        after = [client.request() for _ in range(20)]  # still serving
        alive = daemon.alive()
        rss_after = daemon.rss() if alive else None
        failures = daemon.log_text().count("a connection failed")
        client.close()
    p99_before, p99_during = _pct(before, 0.99), _pct(during, 0.99)
    g99_before, g99_during = _pct(gaps_before, 0.99), _pct(gaps_during, 0.99)
    return {
        "benchmark": "fuzz",
        "frames_sent": sum(report["categories"].values()),
        "frames_by_category": dict(sorted(report["categories"].items())),
        "answers_by_name": dict(sorted(report["answers"].items())),
        "internal_errors": report["answers"].get("InternalError", 0),
        "connection_failures_logged": failures,
        "daemon_crashes": 0 if alive else 1,
        "fuzz_seconds": round(fuzz_s, 2),
        "fuzz_rate_limit_per_s": rate or None,
        "daemon_rss_mb": {
            "before": round(rss_before / 1e6, 1),
            "peak": round(rss_peak / 1e6, 1),
            "after": None if rss_after is None else round(rss_after / 1e6, 1),
            "growth": None if rss_after is None else round((rss_after - rss_before) / 1e6, 1),
        },
        "valid_client_ms": {
            "requests_without_fuzz": len(before),
            "requests_with_fuzz": len(during),
            "p50_without": round(statistics.median(before) * 1000, 2),
            "p99_without": round(p99_before * 1000, 2),
            "p50_with": round(statistics.median(during) * 1000, 2),
            "p99_with": round(p99_during * 1000, 2),
            "p99_ratio": round(p99_during / p99_before, 3),
            "p50_ratio": round(statistics.median(during) / statistics.median(before), 3),
            "served_after": len(after),
        },
        "valid_client_token_gap_ms": {
            "engine_pacing": token_s * 1000,
            "gaps_without_fuzz": len(gaps_before),
            "gaps_with_fuzz": len(gaps_during),
            "p50_without": round(statistics.median(gaps_before) * 1000, 2),
            "p99_without": round(g99_before * 1000, 2),
            "p50_with": round(statistics.median(gaps_during) * 1000, 2),
            "p99_with": round(g99_during * 1000, 2),
            "p99_ratio": round(g99_during / g99_before, 3),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=10_000, help="malformed frames to send (at least)")
    ap.add_argument("--rate", type=float, default=2000.0, help="frames per second in total (0 = as fast as possible)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--baseline", type=int, default=40, help="valid requests measured without fuzz (and at least as many with)")
    ap.add_argument("--token-ms", type=float, default=10.0, help="the echo engine's pause between words for the valid client")
    ap.add_argument("--no-big-line", action="store_true", help="skip the 64 MB line")
    args = ap.parse_args()
    result = run(args.frames, args.rate, args.seed, args.connections, args.baseline, not args.no_big_line, args.token_ms / 1000)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
