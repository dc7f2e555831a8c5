"""Write llguidance.h, the C API of the llguidance installed in this environment, into a folder.

scripts/setup builds llama-server's llguidance sampler against the llguidance library that
Impetus already installs (its Python wheel exports the C API). The header is not in the wheel:
it comes from the sdist of the same version, fetched from the package index pip uses
(``PIP_INDEX_URL``, else pip's default) and checked against the index's sha256.

Usage: python scripts/llguidance_header.py DEST_DIR   (prints the version it wrote)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request
from importlib.metadata import version
from pathlib import Path

HEADER = "parser/llguidance.h"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


def index_url() -> str:
    named = os.environ.get("PIP_INDEX_URL")
    if named:
        return named.rstrip("/") + "/"
    from pip._internal.models.index import PyPI  # pip's own default index, not named here

    return PyPI.simple_url.rstrip("/") + "/"


def sdist(wanted: str) -> bytes:
    request = urllib.request.Request(index_url() + "llguidance/", headers={"Accept": SIMPLE_JSON})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    name = f"llguidance-{wanted}.tar.gz"
    entry = next((f for f in files if f["filename"] == name), None)
    if entry is None:
        raise SystemExit(f"llguidance_header: the index has no {name}")
    with urllib.request.urlopen(entry["url"], timeout=120) as response:
        data: bytes = response.read()
    expected = entry.get("hashes", {}).get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise SystemExit(f"llguidance_header: {name} does not match the index's sha256")
    return data


def main() -> None:
    dest = Path(sys.argv[1])
    wanted = version("llguidance")
    with tarfile.open(fileobj=io.BytesIO(sdist(wanted)), mode="r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("/" + HEADER) and m.isfile()), None)
        if member is None:
            raise SystemExit(f"llguidance_header: the llguidance {wanted} sdist has no {HEADER}")
        handle = tar.extractfile(member)
        assert handle is not None
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "llguidance.h").write_bytes(handle.read())
    print(wanted)


if __name__ == "__main__":
    main()
