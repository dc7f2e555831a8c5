"""Reference sentence embeddings from sentence-transformers (run by .venv-reference's Python).

Reads ``{"model": FOLDER, "texts": [...]}`` on stdin, prints the vectors as JSON.
"""

import json
import sys

from sentence_transformers import SentenceTransformer

request = json.load(sys.stdin)
model = SentenceTransformer(request["model"], device="cpu", local_files_only=True)
vectors = model.encode(request["texts"], convert_to_numpy=True)
json.dump(vectors.astype(float).tolist(), sys.stdout)
