"""``impetusctl doctor`` on this machine, with and without a daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import DaemonProcess, short_socket


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "impetusctl", *args, "doctor"], env=env, capture_output=True, text=True, timeout=180)


def test_doctor_with_a_running_daemon(shared_daemon: DaemonProcess) -> None:
    done = doctor(shared_daemon.env, "--json")
    assert done.returncode == 0, done.stdout
    report = json.loads(done.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is True
    assert checks["daemon"]["status"] == "pass" and str(shared_daemon.socket) in checks["daemon"]["detail"]
    assert checks["mlx"]["status"] == "pass" and "cpu" in checks["mlx"]["detail"].lower()
    assert checks["socket"]["status"] == "pass" and "0700" in checks["socket"]["detail"]
    assert checks["python"]["status"] == "pass" and checks["default model"]["status"] == "pass"
    server = checks["llama-server"]  # the binary the llama.cpp backend runs, its version and build flags
    assert server["status"] == "pass" and "llama-server" in server["detail"] and "version:" in server["detail"], server
    assert "-DGGML_NATIVE=OFF" in server["detail"]  # scripts/setup's build, flags recorded beside it
    assert checks["accelerator"]["status"] == "warn"  # no GPU on this machine: says so, does not fail
    blas = checks["cpu blas"]
    assert (blas["status"], "libopenblas" in blas["detail"]) in {("pass", True), ("warn", False)}
    assert blas["status"] == "pass" or "libopenblas0-pthread" in blas["fix"]


def test_doctor_reports_a_loose_socket_directory_and_fails(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = short_socket().parent
    run.mkdir()
    os.chmod(run, 0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPETUS_")}
    env.update(IMPETUS_HOME=str(tmp_path / "home"), IMPETUS_SOCKET=str(run / "d.sock"))
    done = doctor(env)
    assert done.returncode == 1
    assert "[FAIL] socket" in done.stdout and f"chmod 700 {run}" in done.stdout
    assert "[warn] daemon: no daemon answers" in done.stdout


def test_doctor_says_which_backend_runs_where(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from impetusctl.doctor import backends
    from impetusd.config import load_config
    from impetusd.toolkit.machine import device_for

    here = backends(load_config(home=tmp_path / "a", env={}))
    assert here.status == "pass" and "gguf: llamacpp on the CPU" in here.detail and "mlx: mlx on the CPU" in here.detail
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.toml").write_text('backend = { gguf = "mlx" }\n')
    assert "gguf: mlx on the CPU" in backends(load_config(home=tmp_path / "b", env={})).detail  # the daemon's own choice
    # On Apple Silicon: MLX offloads to Metal, llama.cpp (devices {"cpu"}) does not.
    assert device_for(frozenset({"metal", "cpu", "cuda"}), metal=True) == "metal"
    assert device_for(frozenset({"cpu"}), metal=True) == "cpu"
    assert device_for(frozenset({"metal", "cpu"}), metal=False) == "cpu"
