"""llama.cpp's tokenizer inside the worker: ``libimpetus-vocab``, which scripts/setup builds
with llama-server from the same sources (scripts/impetus_vocab.c), loaded with ctypes.

A prompt is then tokenized in-process, as llama-server's ``/tokenize`` would, without a
round trip to llama-server: two wakes of two processes fewer before prefill starts, which
on a loaded machine is where the time to first token goes. The library loads the model's
vocabulary only (no weights). ``open_beside`` gives None where there is none (a
llama-server from PATH or ``IMPETUS_LLAMA_SERVER``, a GPU build); the plugin then asks
llama-server, as before.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading

log = logging.getLogger(__name__)

LIBRARY = "libimpetus-vocab.so"


class Vocab:
    def __init__(self, lib: ctypes.CDLL, model: int) -> None:
        self._lib = lib
        self._model = ctypes.c_void_p(model)
        self._lock = threading.Lock()  # close against a tokenize in flight

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode()
        room = len(data) + 8  # a token is at least a byte, plus the special ones added
        while True:
            out = (ctypes.c_int32 * room)()
            with self._lock:
                if not self._model:
                    raise RuntimeError("the vocabulary is closed")
                n = self._lib.impetus_vocab_tokenize(self._model, data, len(data), out, room, add_special, parse_special)
            if n >= 0:
                return out[:n]
            room = -n

    def close(self) -> None:
        with self._lock:
            if self._model:
                self._lib.impetus_vocab_close(self._model)
                self._model = ctypes.c_void_p(None)


def open_beside(binary_path: str, model_path: str) -> Vocab | None:
    """The vocabulary of ``model_path`` through the library installed beside ``binary_path``,
    or None when there is no such library or it cannot read the model."""
    path = os.path.join(os.path.dirname(binary_path), LIBRARY)
    if not os.path.isfile(path):
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        log.warning("%s does not load (%s): prompts are tokenized by llama-server", path, exc)
        return None
    lib.impetus_vocab_open.restype = ctypes.c_void_p
    lib.impetus_vocab_open.argtypes = [ctypes.c_char_p]
    lib.impetus_vocab_tokenize.restype = ctypes.c_int32
    lib.impetus_vocab_tokenize.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int32,
        ctypes.POINTER(ctypes.c_int32),
        ctypes.c_int32,
        ctypes.c_bool,
        ctypes.c_bool,
    ]
    lib.impetus_vocab_close.restype = None
    lib.impetus_vocab_close.argtypes = [ctypes.c_void_p]
    model = lib.impetus_vocab_open(os.fsencode(model_path))
    if not model:
        log.warning("%s cannot read %s: prompts are tokenized by llama-server", path, model_path)
        return None
    return Vocab(lib, model)
