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
from impetusd.plugin.chat import TOOL_OPEN, TOOL_OPENER, reasoning_opened, template_inputs
from impetusd.plugin.children import child_env, die_with
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
    LoadOptions,
    ModelSpec,
    TextSink,
    TokenizeOutput,
    Tokenizer,
    TokenizeRequest,
    TunableEngine,
    Tuning,
    WakeableEngine,
    WarmUpEngine,
)
from impetusd.plugin.hookspecs import hookimpl
from impetusd.plugin.machine import has_metal
from impetusd.plugin.nvidia import Gpu
from impetusd.plugin.nvidia import process_memory as nvidia_process_memory
from impetusd.plugin.nvidia import query as nvidia_gpus
from impetusd.plugin.registries import (
    CacheTier,
    CacheTierContext,
    HardwareMonitor,
    MethodSpec,
    ModelFormat,
    PluginRegistry,
    PromptCacheTier,
)
from impetusd.plugin.signed_files import SignedFiles
from impetusd.plugin.stops import StopScanner
from impetusd.plugin.structured import format_dict, grammar_for, lark_for
from impetusd.protocol.api import FinishReason, GrammarFormat, JsonObjectFormat, JsonSchemaFormat, RegexFormat, TokenLogprob, TopLogprob
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
    "Gpu",
    "MethodSpec",
    # child processes of a worker
    "child_env",
    "die_with",
    # the engine contract
    "ModelSpec",
    "LoadOptions",
    "GenerateRequest",
    "EngineResult",
    "TextSink",
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
    "WakeableEngine",
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
    "SignedFiles",
    # structured output and tools (impetusd/plugin/structured.py, chat.py; docs/structured.md)
    "TokenLogprob",
    "TopLogprob",
    "JsonObjectFormat",
    "JsonSchemaFormat",
    "RegexFormat",
    "GrammarFormat",
    "grammar_for",
    "lark_for",
    "format_dict",
    "reasoning_opened",
    "template_inputs",
    "TOOL_OPEN",
    "TOOL_OPENER",
    "has_metal",
    "nvidia_gpus",
    "nvidia_process_memory",
    "memory_cgroup",
    "MemoryCgroup",
]
