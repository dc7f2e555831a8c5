"""Typed params and results of the daemon's RPC methods.

New fields always get defaults; existing field types never change.
Generation params use OpenAI's names where one exists.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

KeepAlive = float | str | None  # seconds, or "5m" / "1h" / "-1"; None = default


class Empty(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A method that takes no params."""


# --- daemon.* -------------------------------------------------------------------
class PluginInfo(msgspec.Struct, frozen=True):
    name: str
    hooks: list[str]


class DaemonInfo(msgspec.Struct, frozen=True):
    name: str
    version: str
    pid: int
    socket: str
    home: str
    started_at: float
    uptime_s: float
    methods: list[str]
    plugins: list[PluginInfo]
    formats: list[str]
    backends: list[str]
    hardware: dict[str, Any]


class ModelFailure(msgspec.Struct, frozen=True):
    """A model whose worker died (crash, signal, hang) within the crash window.

    ``state`` is ``failed`` while its circuit is open (requests are refused with
    ``ModelFailed``), ``recovering`` while the next start is merely delayed.
    """

    name: str
    state: Literal["failed", "recovering"]
    reason: str
    last_cause: str
    failures: int  # within the window
    total_failures: int  # since the daemon started
    hangs: int
    last_failure_at: float
    retry_after_s: float  # until the circuit closes / the backoff ends


class ThermalState(msgspec.Struct, frozen=True):
    """What the thermal watch last saw, and whether the daemon is backing off."""

    level: str  # nominal, fair, serious, critical, or unknown (no monitor reports one)
    source: str | None = None  # the monitor reporting the level
    throttled: bool = False  # decode batch and prefill chunk lowered, warm-ups postponed
    since: float | None = None  # when the current level was first seen
    max_batch: int | None = None  # the tuning workers run with (None: the engine's default)
    prefill_chunk: int | None = None


class SnapshotParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class HardwareSnapshot(msgspec.Struct, frozen=True):
    """``hardware.snapshot``'s result: every monitor's facts, each worker's memory."""

    time: float
    monitors: dict[str, Any]
    workers: dict[str, int | None]  # model -> worker RSS bytes
    thermal: ThermalState | None = None


class Health(msgspec.Struct, frozen=True):
    status: Literal["ok", "degraded", "shutting_down"]  # degraded: a model is failed
    uptime_s: float
    connections: int
    in_flight: int
    loaded_models: int
    failures: list[ModelFailure] = []
    thermal: ThermalState | None = None
    nodes: list[NodeInfo] = []  # compute nodes, as last probed (nodes.list probes now)


class Describe(msgspec.Struct, frozen=True):
    methods: dict[str, Any]
    components: dict[str, Any]


class ShutdownResult(msgspec.Struct, frozen=True):
    stopping: bool


# --- models.* -------------------------------------------------------------------
class ModelEntry(msgspec.Struct, frozen=True):
    name: str
    path: str | None
    format: str | None
    size_bytes: int | None
    available: bool
    loaded: bool
    source: str
    metadata: dict[str, Any] = {}


class ModelList(msgspec.Struct, frozen=True):
    models: list[ModelEntry]


class LoadParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: str
    backend: str | None = None
    keep_alive: KeepAlive = None
    # engine settings (None: the configuration's); a loaded model with others is reloaded
    kv_type: Literal["f16", "q8_0", "q4_0"] | None = None
    flash_attn: Literal["auto", "on", "off"] | None = None
    draft: str | None = None  # a draft model (name or path) for speculative decoding
    ngram: bool | None = None  # n-gram speculative decoding, no draft model
    # Layers to offload to the GPU (a backend that offloads; more than the model has: all of
    # them); None: the backend's default (e.g. config.toml's [backends.llamacpp] gpu_layers: what fits).
    n_gpu_layers: Annotated[int, msgspec.Meta(ge=0)] | None = None
    nodes: list[str] | None = None  # compute nodes (names from nodes.list, or host:port) to split it across; [] = this machine only
    # processes on this machine to split it across (MLX: mlx.distributed's ring backend, tensor parallel); None: 1
    ranks: Annotated[int, msgspec.Meta(ge=1, le=16)] | None = None


# --- compute nodes (a backend's placement capability; its plugin serves nodes.*) -------
class NodeInfo(msgspec.Struct, frozen=True):
    """A compute node the daemon may split models across, as last probed."""

    name: str
    address: str  # host:port
    state: Literal["ready", "busy", "unreachable", "unknown"]  # busy: every port serving a client (each serves one at a time)
    free_bytes: int | None = None  # what its device reports (the last time it answered)
    total_bytes: int | None = None
    memory_limit_bytes: int | None = None  # nodes.add's cap on what a load may place there
    latency_ms: float | None = None  # TCP connect, plus the hello and memory query when it answered
    error: str | None = None
    used_by: list[str] = []  # loaded models split across it
    probed_at: float | None = None
    clients: int = 1  # rpc-servers on ports port..port+clients-1 (node serve --clients): models that may use it at once
    held_bytes: int = 0  # what the loaded models split across it hold there (counted against its room at the next load)


class NodeShare(msgspec.Struct, frozen=True):
    """The part of a loaded model's estimate placed on one node."""

    name: str  # "local" for this machine
    address: str | None
    bytes: int


class UnloadParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: str


class MemoryEstimate(msgspec.Struct, frozen=True):
    """What a model is expected to use once loaded (formula in docs/design.md, Residency)."""

    total_bytes: int
    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int
    context_tokens: int  # the KV cache is reckoned for this many tokens
    # The part of total_bytes on the GPU (the offloaded layers' share of weights and KV cache,
    # and the GPU's runtime buffers); the rest is host memory. 0: none offloaded.
    gpu_bytes: int = 0
    gpu_layers: int | None = None  # layers the backend was told to offload (None: no GPU plan)


class MemoryBudget(msgspec.Struct, frozen=True):
    """How much the loaded models may use together, and how much they use."""

    budget_bytes: int
    source: Literal["config", "ram", "cgroup", "working-set"]
    used_bytes: int  # the loaded models (and loads under way), each the larger of estimate and RSS
    available_bytes: int  # budget - used, never below 0
    # The GPU side (None: no hardware monitor reports a GPU): the GPUs' memory together,
    # what the loaded models' offloaded parts use, and what is left.
    gpu_budget_bytes: int | None = None
    gpu_used_bytes: int | None = None
    gpu_available_bytes: int | None = None
    gpus: list[str] = []  # their names, as the monitor reports them


class LoadedModel(msgspec.Struct, frozen=True):
    name: str
    path: str
    format: str
    backend: str
    pid: int
    loaded_at: float
    load_ms: float
    expires_at: float | None
    in_flight: int
    requests: int
    rss_bytes: int | None
    # residency and rolling stats (new in issue 4)
    memory_bytes: int = 0  # counted against the budget: the larger of the estimate and the RSS
    estimate: MemoryEstimate | None = None
    warmup_ms: float | None = None  # part of load_ms, when the backend warms up
    keep_alive_s: float | None = None  # None: stays loaded
    expires_in_s: float | None = None  # None: not counting down (busy, or kept forever)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    decode_tps: float | None = None  # over the last requests (tokens / decode time)
    last_used_at: float | None = None
    engine_load_ms: float | None = None  # the backend's own load inside the worker (load_ms adds process start and imports)
    engine: dict[str, Any] = {}  # what the backend reported at load (device, weights, max_batch, prefill_chunk)
    gpu_memory_bytes: int | None = None  # what it counts against the GPU side of the budget (None: nothing offloaded)
    nodes: list[NodeShare] = []  # split across compute nodes: each part of the estimate (local first)
    nodes_dropped: list[str] = []  # requested nodes left out at this load (unreachable), with why


class LoadResult(msgspec.Struct, frozen=True):
    model: LoadedModel
    already_loaded: bool


class UnloadResult(msgspec.Struct, frozen=True):
    name: str
    pid: int


class LoadedList(msgspec.Struct, frozen=True):
    models: list[LoadedModel]
    failed: list[ModelFailure] = []  # models whose workers keep dying (not loaded)
    memory: MemoryBudget | None = None


# --- generation -----------------------------------------------------------------
class ToolCall(msgspec.Struct, frozen=True):
    """A function call the model made (in a result) or made earlier (in an assistant
    message of the conversation). ``arguments`` is a JSON object as a string."""

    id: str
    name: str
    arguments: str


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[ToolCall] | None = None  # assistant: the calls it made (content may be "")
    tool_call_id: str | None = None  # tool: which call this message answers
    name: str | None = None  # tool: the function's name
    reasoning: str | None = None  # assistant: its thinking, kept out of ``content``


# ``format``: what the answer must match, enforced token by token (docs/structured.md)
class JsonObjectFormat(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="json_object", tag_field="type"):
    """Any JSON object."""


class JsonSchemaFormat(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="json_schema", tag_field="type", kw_only=True):
    schema: dict[str, Any]
    strict: bool = True  # a schema feature that cannot be enforced is refused (never relaxed)
    name: str | None = None


class RegexFormat(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="regex", tag_field="type"):
    pattern: str


class GrammarFormat(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="grammar", tag_field="type", kw_only=True):
    syntax: Literal["lark", "gbnf"]
    grammar: str


Format = JsonObjectFormat | JsonSchemaFormat | RegexFormat | GrammarFormat


class FunctionDef(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] = {}  # a JSON schema for the arguments object
    strict: bool | None = None


class Tool(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    type: Literal["function"] = "function"
    function: FunctionDef


class Sampling(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How each token is picked: the sampling fields of ``chat`` and ``complete``, named here
    once (a backend's capability for each is its name: ``SAMPLING_CAPABILITIES``).
    ``None`` means "not asked for"; ``resolved`` makes the choices an engine gets."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[int, float] | None = None

    def resolved(self, max_tokens: int, temperature: float) -> ResolvedSampling:
        """What was asked for, the rest at its default: ``max_tokens`` and ``temperature``
        the daemon's (its configuration), each other field ResolvedSampling's."""
        values: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
        for name in Sampling.__struct_fields__:
            if (value := getattr(self, name)) is not None:
                values[name] = value
        if isinstance(self.stop, str):
            values["stop"] = [self.stop]
        return ResolvedSampling(**values)


class ResolvedSampling(Sampling, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Sampling with every choice made (``Sampling.resolved``), as ``GenerateRequest.sampling``
    carries it to an engine: the same fields, none left None but ``seed`` (a random one). Each
    default asks for nothing but ``max_tokens`` and ``temperature``, which the daemon always sets."""

    max_tokens: int = 512
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0
    stop: list[str] = []
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = {}


class SamplingParams(Sampling, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Fields shared by ``chat`` and ``complete``: the sampling ones, and these. ``None``
    means "not asked for"."""

    model: str
    stream: bool = False
    keep_alive: KeepAlive = None
    format: Format | None = None  # constrain the answer (JSON, a schema, a regex, a grammar)
    logprobs: bool = False  # per generated token: its log-probability and bytes
    top_logprobs: int | None = None  # 0-20 most likely alternatives per token (needs logprobs)
    n: int = 1  # 1-8 independent choices (``choices`` in the result)


class ChatParams(SamplingParams, frozen=True, forbid_unknown_fields=True, kw_only=True):
    messages: list[Message]
    tools: list[Tool] | None = None
    tool_choice: str | None = None  # "auto" (default with tools), "none", "required", or a function's name
    parallel_tool_calls: bool = True  # False: at most one call per answer
    think: bool | None = None  # reasoning on/off where the chat template supports it; None: the template's default


class CompleteParams(SamplingParams, frozen=True, forbid_unknown_fields=True, kw_only=True):
    prompt: str


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


class Timings(msgspec.Struct, frozen=True):
    queued_ms: float
    load_ms: float
    ttft_ms: float | None
    prefill_tps: float | None
    decode_tps: float | None
    total_ms: float
    batch_size: int | None = None  # most requests decoded together with this one (batching backends)
    draft_tokens: int | None = None  # speculative decoding: tokens drafted (draft model or n-grams)
    draft_accepted: int | None = None  # of them, accepted by the model
    acceptance_rate: float | None = None  # draft_accepted / draft_tokens
    nodes: list[str] | None = None  # the compute nodes (host:port) the model ran on besides this machine


FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]


class TopLogprob(msgspec.Struct, frozen=True):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(msgspec.Struct, frozen=True):
    """One generated token: the log-probability the model gave it (<= 0) and, when
    ``top_logprobs`` was asked, that many alternatives, most likely first."""

    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob] = []


class Choice(msgspec.Struct, frozen=True, omit_defaults=True):
    """One of ``n`` choices. The result's top-level fields repeat choice 0."""

    index: int
    finish_reason: FinishReason
    message: Message | None = None  # chat
    text: str | None = None  # complete
    stop_sequence: str | None = None
    logprobs: list[TokenLogprob] | None = None
    warning: str | None = None


class GenerationResult(msgspec.Struct, frozen=True, omit_defaults=True):
    model: str
    backend: str
    finish_reason: FinishReason
    usage: Usage  # summed over the choices when n > 1
    timings: Timings
    message: Message | None = None
    text: str | None = None
    stop_sequence: str | None = None  # which of the request's stop strings ended it, when one did
    logprobs: list[TokenLogprob] | None = None  # when asked: one per generated token
    choices: list[Choice] | None = None  # when n > 1
    warning: str | None = None  # e.g. a tool call that did not parse, returned as text


class ToolCallDelta(msgspec.Struct, frozen=True, omit_defaults=True):
    """A piece of a streamed tool call: the first has ``id`` and ``name``, the rest
    carry fragments of ``arguments`` that concatenate to the full JSON string."""

    index: int  # which call within the answer
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class Chunk(msgspec.Struct, frozen=True, omit_defaults=True):
    """Params of the ``chat.chunk`` notification: one typed delta."""

    id: int | str | None
    delta: str  # text of ``kind`` (empty for a tool-call delta)
    kind: Literal["content", "reasoning", "tool_call"] = "content"
    choice: int = 0  # which choice, when n > 1
    tool_call: ToolCallDelta | None = None
    logprobs: list[TokenLogprob] | None = None  # the tokens of this delta, when asked


class CancelParams(msgspec.Struct, frozen=True):
    id: int | str


# --- embeddings -------------------------------------------------------------------
class EmbedParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    model: str
    input: str | list[str]
    keep_alive: KeepAlive = None


class EmbedResult(msgspec.Struct, frozen=True):
    model: str
    backend: str
    embeddings: list[list[float]]
    usage: Usage
    timings: Timings


# --- metrics ----------------------------------------------------------------------
class Histogram(msgspec.Struct, frozen=True):
    """Cumulative counts of observations ``<=`` each bound, as Prometheus keeps
    them; ``count`` is the +Inf bucket."""

    bounds: list[float]
    counts: list[int]
    sum: float
    count: int


class RequestCount(msgspec.Struct, frozen=True):
    model: str
    method: str
    outcome: str
    count: int


class ModelStats(msgspec.Struct, frozen=True):
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    worker_starts: int
    worker_crashes: int
    worker_restarts: int
    ttft_seconds: Histogram
    decode_tokens_per_second: Histogram


class RecentRequest(msgspec.Struct, frozen=True):
    time: float
    model: str
    method: str
    outcome: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None
    decode_tps: float | None
    total_ms: float


class Metrics(msgspec.Struct, frozen=True):
    uptime_s: float
    connections: int
    in_flight: int
    requests: list[RequestCount]
    models: list[ModelStats]
    loaded: list[LoadedModel]
    recent: list[RecentRequest] = []  # the last requests that finished, newest first


# --- model store --------------------------------------------------------------------
class TokenizeParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Exactly one of ``text`` (as it is) and ``messages`` (through the model's chat
    template, with the generation prompt: the tokens a chat's prompt would be)."""

    model: str
    text: str | None = None
    messages: list[Message] | None = None
    keep_alive: KeepAlive = None


class TokenizeResult(msgspec.Struct, frozen=True):
    model: str
    backend: str
    count: int
    ids: list[int]
    pieces: list[str]  # each id's text (a byte-level piece may be part of a character)


class DetokenizeParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    model: str
    ids: list[int]
    keep_alive: KeepAlive = None


class DetokenizeResult(msgspec.Struct, frozen=True):
    model: str
    backend: str
    text: str
    pieces: list[str]


class PullParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    model: str  # alias, org/repo, org/repo:REVISION or org/repo:QUANT (also org/repo@REVISION:QUANT)
    force: bool = False  # pull again even when registered (re-verifies, refetches what changed)


class FileProgress(msgspec.Struct):
    name: str
    total: int
    done: int = 0
    state: Literal["waiting", "cached", "downloading", "verifying", "done", "retrying"] = "waiting"


class PullProgress(msgspec.Struct, frozen=True):
    """Params of the ``models.progress`` notification."""

    id: int | str | None
    model: str
    status: Literal["resolving", "queued", "downloading", "verifying", "registering"]
    done: int
    total: int
    rate_bps: float
    files: list[FileProgress]


class StoredFile(msgspec.Struct, frozen=True):
    name: str
    location: str
    size: int
    sha256: str


class ModelInfo(msgspec.Struct, frozen=True):
    """A registered model, as ``models.show`` describes it."""

    name: str
    format: str
    path: str
    source: str
    repo: str | None
    revision: str | None
    commit: str | None
    size_bytes: int
    digest: str
    created_at: float
    loaded: bool
    files: list[StoredFile]
    metadata: dict[str, Any]


class PullResult(msgspec.Struct, frozen=True):
    status: Literal["pulled", "already_registered", "cancelled"]
    model: ModelInfo | None
    downloaded_bytes: int
    reused_bytes: int
    elapsed_s: float


class ImportParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    path: str
    name: str | None = None
    allow_pickle: bool = False  # refused: pickles are never loaded (see convert_pickle)
    convert_pickle: bool = False  # convert a PyTorch pickle checkpoint once to safetensors in the store


class NameParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: str


class RemoveParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    model: str
    force: bool = False


class RemoveResult(msgspec.Struct, frozen=True):
    name: str
    unloaded: bool
    freed_bytes: int
    freed_files: list[str]


class CopyParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    source: str
    destination: str


class VerifyParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: str | None = None


class FileCheck(msgspec.Struct, frozen=True):
    name: str
    location: str
    ok: bool
    problem: str | None = None


class ModelCheck(msgspec.Struct, frozen=True):
    name: str
    ok: bool
    files: list[FileCheck]


class VerifyResult(msgspec.Struct, frozen=True):
    ok: bool
    models: list[ModelCheck]
