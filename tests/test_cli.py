"""impetusctl as a user runs it: a real process, autostarting a real daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import daemon_env, pid_alive, short_socket, wait_until


class CLI:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = daemon_env(root / "home", short_socket())

    def __call__(self, *args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:  # noqa: A002
        return subprocess.run([sys.executable, "-m", "impetusctl", *args], env=self.env, capture_output=True, text=True, input=input, timeout=timeout)

    def daemon_pid(self) -> int | None:
        done = self("--json", "--no-autostart", "status")
        return json.loads(done.stdout)["info"]["pid"] if done.returncode == 0 else None


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory):
    c = CLI(tmp_path_factory.mktemp("cli"))
    yield c
    pid = c.daemon_pid()
    if pid:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid), timeout=30)


def test_no_autostart_fails_with_one_line(cli: CLI) -> None:
    done = cli("--no-autostart", "status")
    assert done.returncode == 1
    assert done.stderr.startswith("Error: no daemon answers on")
    assert len(done.stderr.strip().splitlines()) == 1


def test_run_json_autostarts_and_reports(cli: CLI) -> None:
    done = cli("--json", "run", "smollm2-135m", "Which city is the capital of France?", "--max-tokens", "12")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert "Paris" in result["text"]
    assert result["finish_reason"] in ("stop", "length")
    assert result["usage"]["prompt_tokens"] > 0 and result["usage"]["completion_tokens"] > 0
    assert {"queued_ms", "load_ms", "ttft_ms", "prefill_tps", "decode_tps"} <= set(result["timings"])
    assert result["timings"]["load_ms"] > 0  # this request caused the load
    assert cli.daemon_pid() is not None  # autostarted, still running
    assert (cli.root / "home" / "logs" / "impetusd.log").exists()


def test_run_streams_plain_text(cli: CLI) -> None:
    done = cli("run", "smollm2-135m", "Which city is the capital of France?", "--max-tokens", "12")
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout


def test_prompt_from_stdin(cli: CLI) -> None:
    done = cli("--json", "run", "smollm2-135m", "--max-tokens", "3", input="Hello")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["usage"]["completion_tokens"] <= 3


def test_ls_ps_status_unload(cli: CLI) -> None:
    cli("load", "smollm2-135m")
    ls = json.loads(cli("--json", "ls").stdout)
    [entry] = [m for m in ls["models"] if m["name"] == "smollm2-135m"]
    assert entry["available"] and entry["loaded"] and entry["format"] == "gguf"
    ps = json.loads(cli("--json", "ps").stdout)
    pid = ps["models"][0]["pid"]
    assert pid_alive(pid) and ps["models"][0]["rss_bytes"] > 0
    table = cli("ps").stdout
    assert "smollm2-135m" in table and str(pid) in table
    status = cli("status")
    assert status.returncode == 0 and "running" in status.stdout
    done = cli("unload", "smollm2-135m")
    assert done.returncode == 0 and str(pid) in done.stdout
    assert wait_until(lambda: not pid_alive(pid), timeout=5)
    again = cli("unload", "smollm2-135m")
    assert again.returncode == 1
    assert again.stderr.strip() == "Error: model 'smollm2-135m' is not loaded [ModelNotLoaded]"


def test_errors_are_one_line(cli: CLI) -> None:
    done = cli("run", "no-such-model", "hi")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "ModelNotFound" in done.stderr
    bad = cli("run", "smollm2-135m", "hi", "--top-p", "7")
    assert bad.returncode == 1 and "top_p" in bad.stderr


def test_interactive_chat_keeps_history_and_quits(cli: CLI) -> None:
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # child: impetusctl on a terminal
        os.environ.clear()
        os.environ.update(cli.env)
        os.execv(sys.executable, [sys.executable, "-m", "impetusctl", "run", "smollm2-135m", "--max-tokens", "8"])
    output = b""

    def read_until(marker: bytes, limit: float = 90) -> None:
        nonlocal output
        import select
        import time

        deadline = time.monotonic() + limit
        while marker not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    output += os.read(fd, 4096)
                except OSError:
                    break
        assert marker in output, output.decode(errors="replace")

    read_until(b">>> ")
    os.write(fd, b"Which city is the capital of France?\n")
    output = b""
    read_until(b">>> ")
    assert b"Paris" in output
    os.write(fd, b"/bye\n")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"], "additionalProperties": False},
    },
}


@pytest.fixture
def mlx(cli: CLI) -> tuple[str, ...]:
    """The bundled model on MLX (it enforces formats, tools and logprobs; docs/structured.md)."""
    cli("unload", "smollm2-135m")  # loaded on the automatic choice by the tests above, if they ran
    return ("--backend", "mlx")


def test_run_format_schema_file_and_json(cli: CLI, mlx: tuple[str, ...]) -> None:
    schema = cli.root / "city.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"], "additionalProperties": False}))
    done = cli("--json", "run", "smollm2-135m", "Paris as JSON.", "--format", str(schema), "--max-tokens", "20", "--temperature", "0", *mlx)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["finish_reason"] == "stop" and list(json.loads(result["text"])) == ["city"]
    plain = cli("run", "smollm2-135m", "A JSON object about a cat.", "--format", "json", "--max-tokens", "12", "--temperature", "0", *mlx)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.lstrip().startswith("{")
    bad = cli("run", "smollm2-135m", "x", "--format", str(cli.root / "absent.json"))
    assert bad.returncode == 2 and "--format" in bad.stderr


def test_run_tools_prints_the_call(cli: CLI, mlx: tuple[str, ...]) -> None:
    tools = cli.root / "tools.json"
    tools.write_text(json.dumps([WEATHER]))
    args = ("run", "smollm2-135m", "What is the weather in Paris?", "--tools", str(tools), "--tool-choice", "get_weather", "--max-tokens", "30", "--temperature", "0", *mlx)
    done = cli("--json", *args)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["finish_reason"] == "tool_calls" and result["tool_calls"][0]["name"] == "get_weather"
    assert set(result["tool_calls"][0]["arguments"]) == {"city"}
    plain = cli(*args)
    assert plain.returncode == 0, plain.stderr
    line = plain.stdout.strip().splitlines()[-1]
    assert line.startswith("get_weather(") and json.loads(line.removeprefix("get_weather(").removesuffix(")")) == result["tool_calls"][0]["arguments"]


def test_run_logprobs(cli: CLI, mlx: tuple[str, ...]) -> None:
    done = cli("--json", "run", "smollm2-135m", "Hi", "--logprobs", "2", "--max-tokens", "3", "--temperature", "0", *mlx)
    assert done.returncode == 0, done.stderr
    tokens = json.loads(done.stdout)["logprobs"]
    assert len(tokens) == 3 and all(t["logprob"] <= 0 and len(t["top_logprobs"]) == 2 for t in tokens)
    plain = cli("run", "smollm2-135m", "Hi", "--logprobs", "2", "--max-tokens", "3", "--temperature", "0", *mlx)
    assert plain.returncode == 0 and len([line for line in plain.stdout.splitlines() if "\t" in line]) == 3
