"""Everything a plugin imports from Impetus, in one place (docs/plugins.md).

Re-exports only: the hook marker, the registries and what goes into them (impetusctl's
commands and doctor checks among them), the engine contract (requests, results, the
``Engine`` protocol and its optional capabilities, each checked with ``isinstance``; a
backend's placement across compute nodes), the errors a plugin raises, the
stop-sequence scanner, machine facts and cgroup helpers. Importing it loads no
ML library; the built-in plugins import from ``impetusd`` through it alone
(tests/test_meta.py checks).
"""

from __future__ import annotations

from impetusd.config import Config
from impetusd.engine.backend import SAMPLING_CAPABILITIES, BackendSpec
from impetusd.engine.capabilities import (
    BatchEngine,
    CacheTierEngine,
    Embedder,
    Engine,
    FatalEngine,
    TextSink,
    Tokenizer,
    TunableEngine,
    WakeableEngine,
    WarmUpEngine,
)
from impetusd.engine.messages import (
    DetokenizeOutput,
    DetokenizeRequest,
    EmbedOutput,
    EmbedRequest,
    EngineInfo,
    EngineResult,
    GenerateRequest,
    LoadOptions,
    ModelSpec,
    TokenizeOutput,
    TokenizeRequest,
    Tuning,
)
from impetusd.engine.placement import Holdings, NodePlacement, Placement
from impetusd.observe.cgroup import MemoryCgroup, memory_cgroup
from impetusd.observe.events import Event
from impetusd.plugin.hookspecs import hookimpl
from impetusd.plugin.registries import (
    CacheTier,
    CacheTierContext,
    CliCommand,
    CliState,
    Diagnosis,
    DoctorCheck,
    HardwareMonitor,
    MethodSpec,
    ModelFormat,
    PluginRegistry,
    PromptCacheTier,
)
from impetusd.protocol.api import (
    Empty,
    FinishReason,
    GrammarFormat,
    JsonObjectFormat,
    JsonSchemaFormat,
    MemoryEstimate,
    NodeInfo,
    NodeShare,
    RegexFormat,
    TokenLogprob,
    TopLogprob,
)
from impetusd.protocol.errors import (
    ContextLengthExceeded,
    ConversionFailed,
    ImpetusError,
    InsufficientMemory,
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
from impetusd.toolkit.chat import TOOL_OPEN, TOOL_OPENER, reasoning_opened, template_inputs
from impetusd.toolkit.children import child_env, die_with
from impetusd.toolkit.machine import has_metal
from impetusd.toolkit.nvidia import Gpu
from impetusd.toolkit.nvidia import process_memory as nvidia_process_memory
from impetusd.toolkit.nvidia import query as nvidia_gpus
from impetusd.toolkit.signed_files import SignedFiles
from impetusd.toolkit.stops import StopScanner
from impetusd.toolkit.structured import format_dict, grammar_for, lark_for

__all__ = [
    # hooks (impetusd/plugin/hookspecs.py) and what their arguments are
    "hookimpl",
    "Config",
    "Event",
    # registries and the items registration hooks add
    "PluginRegistry",
    "ModelFormat",
    "BackendSpec",
    "SAMPLING_CAPABILITIES",
    "CacheTier",
    "CacheTierContext",
    "PromptCacheTier",
    "HardwareMonitor",
    "Gpu",
    "MethodSpec",
    # impetusctl's commands and doctor checks that plugins add
    "CliCommand",
    "CliState",
    "DoctorCheck",
    "Diagnosis",
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
    # a backend's placement across compute nodes (impetusd/engine/placement.py)
    "NodePlacement",
    "Placement",
    "Holdings",
    "NodeInfo",
    "NodeShare",
    "MemoryEstimate",
    "Empty",
    # errors a plugin raises
    "ImpetusError",
    "PluginError",
    "ModelNotFound",
    "UnsupportedFormat",
    "InvalidModelFile",
    "InvalidParams",
    "NoBackend",
    "NodeLost",
    "InsufficientMemory",
    "UnsupportedParameter",
    "ContextLengthExceeded",
    "PickleRefused",
    "ConversionFailed",
    # helpers
    "StopScanner",
    "SignedFiles",
    # structured output and tools (impetusd/toolkit/structured.py, chat.py; docs/structured.md)
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
