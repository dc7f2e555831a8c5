"""Reference sentence embeddings from sentence-transformers (run by .venv-reference's Python).

Reads a JSON list of ``{"model": FOLDER, "texts": [...]}`` jobs on stdin and
prints a JSON list with each job's vectors.
"""

import json
import sys

from sentence_transformers import SentenceTransformer

results = []
for job in json.load(sys.stdin):
    model = SentenceTransformer(job["model"], device="cpu", local_files_only=True)
    results.append(model.encode(job["texts"], convert_to_numpy=True).astype(float).tolist())
json.dump(results, sys.stdout)
