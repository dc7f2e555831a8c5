"""Everything a plugin imports from Impetus, in one place (docs/plugins.md).

Re-exports only: the hook marker, the registries and what goes into them, the
engine contract (requests, results, the ``Engine`` protocol and its optional
capabilities, each checked with ``isinstance``), the errors a plugin raises, the
stop-sequence scanner, machine facts and cgroup helpers. Importing it loads no
ML library; the built-in plugins import from ``impetusd`` through it alone
(tests/test_meta.py checks).
"""

from __future__ import annotations

from impetusd.config import Config
from impetusd.observe.cgroup import MemoryCgroup, memory_cgroup
from impetusd.observe.events import Event
from impetusd.plugin.engine import (
    BackendSpec,
    BatchEngine,
    CacheTierEngine,
    DetokenizeOutput,
    DetokenizeRequest,
    Embedder,
    EmbedOutput,
    EmbedRequest,
    Engine,
    EngineInfo,
    EngineResult,
    FatalEngine,
    GenerateRequest,
    ModelSpec,
    TokenizeOutput,
    Tokenizer,
    TokenizeRequest,
    TunableEngine,
    Tuning,
    WarmUpEngine,
)
from impetusd.plugin.hookspecs import hookimpl
from impetusd.plugin.machine import has_metal
from impetusd.plugin.registries import (
    CacheTier,
    CacheTierContext,
    HardwareMonitor,
    MethodSpec,
    ModelFormat,
    PluginRegistry,
    PromptCacheTier,
)
from impetusd.plugin.stops import StopScanner
from impetusd.protocol.api import FinishReason
from impetusd.protocol.errors import (
    ContextLengthExceeded,
    ConversionFailed,
    ImpetusError,
    InvalidModelFile,
    InvalidParams,
    ModelNotFound,
    NoBackend,
    NodeLost,
    PickleRefused,
    PluginError,
    UnsupportedFormat,
    UnsupportedParameter,
)

__all__ = [
    # hooks (impetusd/plugin/hookspecs.py) and what their arguments are
    "hookimpl",
    "Config",
    "Event",
    # registries and the items registration hooks add
    "PluginRegistry",
    "ModelFormat",
    "BackendSpec",
    "CacheTier",
    "CacheTierContext",
    "PromptCacheTier",
    "HardwareMonitor",
    "MethodSpec",
    # the engine contract
    "ModelSpec",
    "GenerateRequest",
    "EngineResult",
    "FinishReason",
    "EngineInfo",
    "EmbedRequest",
    "EmbedOutput",
    "TokenizeRequest",
    "TokenizeOutput",
    "DetokenizeRequest",
    "DetokenizeOutput",
    "Engine",
    # optional engine capabilities
    "BatchEngine",
    "TunableEngine",
    "Tuning",
    "WarmUpEngine",
    "FatalEngine",
    "CacheTierEngine",
    "Embedder",
    "Tokenizer",
    # errors a plugin raises
    "ImpetusError",
    "PluginError",
    "ModelNotFound",
    "UnsupportedFormat",
    "InvalidModelFile",
    "InvalidParams",
    "NoBackend",
    "NodeLost",
    "UnsupportedParameter",
    "ContextLengthExceeded",
    "PickleRefused",
    "ConversionFailed",
    # helpers
    "StopScanner",
    "has_metal",
    "memory_cgroup",
    "MemoryCgroup",
]
