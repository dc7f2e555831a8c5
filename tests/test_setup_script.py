"""scripts/setup with a Python too old for Impetus (a stock Mac's python3 is the
Command Line Tools' 3.9): a clear message before anything is made, and a venv an
old Python made is made again. Fake interpreters keep it fast: no pip runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parent.parent


def _fake_python(path: Path, version: str, log: Path) -> Path:
    """A python3 that reports ``version`` to code run with -c (the real interpreter
    underneath) and records, then fails, anything else (venv, pip)."""
    info = tuple(int(p) for p in version.split("."))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""#!/bin/sh
case "$1" in
  --version|-V) echo "Python {version}" ;;
  -c) exec {sys.executable} -c "import sys; sys.version_info = {info + ("final", 0)!r}
$2" ;;
  *) echo "{path} $*" >> {log}; exit 1 ;;
esac
"""
    )
    path.chmod(0o755)
    return path


def _setup(root: Path, python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (root / "scripts").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "scripts" / "setup", root / "scripts" / "setup")
    env = {**os.environ, "PYTHON": str(python)}
    return subprocess.run(["bash", str(root / "scripts" / "setup"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=60)


def test_setup_refuses_a_python_older_than_3_11(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    old = _fake_python(tmp_path / "clt" / "python3", "3.9.6", log)
    done = _setup(tmp_path / "repo", old)
    assert done.returncode == 1
    assert f"{old} ({old}) is Python 3.9.6; Impetus needs Python 3.11 or newer" in done.stderr
    assert "PYTHON=python3.12 scripts/setup" in done.stderr
    assert not (tmp_path / "repo" / ".venv").exists() and not log.exists()  # nothing made, nothing installed


def test_setup_makes_again_a_venv_an_old_python_made(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    repo = tmp_path / "repo"
    for venv in (".venv", ".venv-reference"):
        _fake_python(repo / venv / "bin" / "python", "3.9.6", log)
    new = _fake_python(tmp_path / "py312" / "python3", "3.12.4", log)
    done = _setup(repo, new, "--tests")
    assert ".venv was made with Python 3.9.6, older than 3.11: making it again" in done.stderr
    assert ".venv-reference was made with Python 3.9.6, older than 3.11: making it again" in done.stderr
    assert not (repo / ".venv-reference").exists()
    calls = log.read_text().splitlines()
    assert calls == [f"{new} -m venv .venv"]  # the new venv is made with the new Python; nothing ran the old one's pip
