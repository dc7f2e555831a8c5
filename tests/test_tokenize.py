"""``tokenize``/``detokenize``: on the socket and over the shim's ``/tokenize`` routes,
with the bundled model's real tokenizer (MLX) and a backend that cannot (llama.cpp)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from helpers import DaemonProcess, ShimProcess

from impetusd.store.catalog import CATALOG

MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def shim(mlx_shim: ShimProcess) -> ShimProcess:
    return mlx_shim


def test_tokenize_round_trip_with_and_without_the_template(shim: ShimProcess, shared_daemon: DaemonProcess) -> None:
    with shared_daemon.connect() as conn:
        plain = conn.call("tokenize", {"model": MODEL, "text": "Hello world"})["result"]
        assert plain["backend"] == "mlx" and plain["count"] == len(plain["ids"]) == 2 and "".join(plain["pieces"]) == "Hello world"
        chat = conn.call("tokenize", {"model": MODEL, "messages": [{"role": "user", "content": "Hello world"}]})["result"]
        assert chat["count"] > plain["count"] + 3 and "<|im_start|>" in chat["pieces"]  # SmolLM2's chat template
        back = conn.call("detokenize", {"model": MODEL, "ids": plain["ids"]})["result"]
        assert back["text"] == "Hello world" and back["pieces"] == plain["pieces"]
        # The chat prompt's count is what a chat reports as prompt_tokens.
        reply = conn.call("chat", {"model": MODEL, "messages": [{"role": "user", "content": "Hello world"}], "max_tokens": 1})["result"]
        assert reply["usage"]["prompt_tokens"] == chat["count"]
        assert conn.call("detokenize", {"model": MODEL, "ids": [10**9]})["error"]["data"]["field"] == "ids"
        bad = conn.call("tokenize", {"model": MODEL, "text": "a", "messages": []})["error"]
        assert bad["data"]["field"] == "text"


def test_http_routes(shim: ShimProcess, echo_model: Path) -> None:
    got = httpx.post(f"{shim.base}/tokenize", json={"model": MODEL, "text": "Hello world"}, timeout=60).raise_for_status().json()
    assert got["count"] == 2
    text = httpx.post(f"{shim.base}/detokenize", json={"model": MODEL, "ids": got["ids"]}, timeout=60).raise_for_status().json()["text"]
    assert text == "Hello world"
    echo = httpx.post(f"{shim.base}/tokenize", json={"model": str(echo_model), "text": "one three"}, timeout=60).json()
    assert echo["ids"] == [3, 5] and echo["backend"] == "echo"
    wrong = httpx.post(f"{shim.base}/tokenize", json={"model": MODEL, "txt": "x"}, timeout=60)
    assert wrong.status_code == 400 and "txt" in wrong.json()["error"]["message"]


def test_a_backend_without_a_tokenizer_refuses_by_name(shared_daemon: DaemonProcess) -> None:
    with shared_daemon.connect() as conn:
        name = "smollm2-llamacpp"
        assert "result" in conn.call("models.import", {"path": str(CATALOG[MODEL].local_path()), "name": name})
        assert conn.call("models.load", {"model": name, "backend": "llamacpp", "keep_alive": 0})["result"]["model"]["backend"] == "llamacpp"
        err = conn.call("tokenize", {"model": name, "text": "hi"})["error"]
        assert err["data"]["param"] == "tokenize" and "llamacpp" in err["message"]
