"""Turn what a backend raises into the wire error the daemon gets, in one place."""

from __future__ import annotations

import logging

from impetusd.protocol.errors import GenerationFailed, ImpetusError, InsufficientMemory

log = logging.getLogger("impetusd.workers")

# What allocation failures look like when they are not MemoryError: MLX raises
# RuntimeError("[metal::malloc] Attempting to allocate ...") and the like.
_ALLOCATION_WORDS = ("malloc", "unable to allocate", "failed to allocate", "out of memory", "bad_alloc", "outofmemory")


def is_allocation_failure(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(word in text for word in _ALLOCATION_WORDS)
    return False


def backend_failure(exc: Exception, stage: str = "generate") -> ImpetusError:
    if isinstance(exc, ImpetusError):
        return exc
    if is_allocation_failure(exc):
        log.warning("allocation failure during %s: %s", stage, exc)
        return InsufficientMemory(f"the backend could not allocate memory: {type(exc).__name__}: {exc}", stage=stage)
    log.exception("%s failed", stage)
    return GenerationFailed(f"{type(exc).__name__}: {exc}", stage=stage)
