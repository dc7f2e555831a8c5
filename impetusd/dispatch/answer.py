"""One choice of a ``chat`` or ``complete``: the phases it runs in the worker (reasoning,
answer, tool call), its typed deltas, and how its text becomes content, reasoning
and tool calls. The same on every engine (docs/structured.md)."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from impetusd.engine.messages import EngineResult, GenerateRequest
from impetusd.protocol.api import ChatParams, CompleteParams, FinishReason, GrammarFormat, JsonSchemaFormat, TokenLogprob, Tool, ToolCall, ToolCallDelta
from impetusd.toolkit.chat import TOOL_CLOSE, TOOL_OPEN, TOOL_OPENER
from impetusd.toolkit.structured import tool_call_schema
from impetusd.workers.messages import GenerateDone

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
Kind = Literal["content", "reasoning", "tool_call"]
Logprobs = list[TokenLogprob] | None
Send = Callable[[Kind, str, ToolCallDelta | None, Logprobs], Awaitable[None]]
OnText = Callable[[str, Logprobs], Awaitable[None]]
Run = Callable[[GenerateRequest, OnText], Awaitable[GenerateDone]]

MAX_CALLS = 8  # parallel tool calls: at most this many in one answer
# After a call (required or named, parallel): another call's opener, or the end.
ANOTHER_CALL = GrammarFormat(syntax="gbnf", grammar=f'root ::= "{TOOL_OPEN}"?')
_CALL_HEAD = re.compile(r'\s*\{"name": "((?:[^"\\]|\\.)*)", "arguments": ')


def _phase_request(req: GenerateRequest, stop: list[str] | None = None, max_tokens: int | None = None, **changes: Any) -> GenerateRequest:
    """A later phase's request: ``req`` with ``changes`` (its prefix, format), and its
    sampling's ``stop`` and ``max_tokens`` where given."""
    sampling = {name: value for name, value in (("stop", stop), ("max_tokens", max_tokens)) if value is not None}
    return msgspec.structs.replace(req, sampling=msgspec.structs.replace(req.sampling, **sampling), **changes)


def _held(text: str, marker: str) -> int:
    """How many trailing characters of ``text`` could start ``marker``."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


class ThinkSplitter:
    """Routes an answer's text: a leading ``<think>…</think>`` block is reasoning,
    the rest content. Holds back only what might be the start of a marker."""

    def __init__(self, opened: bool = False) -> None:
        # opened: the prompt ended with ``<think>``, so the answer starts inside the reasoning
        self.state: Literal["start", "reasoning", "after", "content"] = "reasoning" if opened else "start"
        self.buf = ""

    def feed(self, text: str) -> list[tuple[Kind, str]]:
        self.buf += text
        out: list[tuple[Kind, str]] = []
        while self.buf:
            if self.state == "start":
                head = self.buf.lstrip()
                if head.startswith(THINK_OPEN):
                    self.state, self.buf = "reasoning", head[len(THINK_OPEN) :]
                elif not head or THINK_OPEN.startswith(head):
                    break
                else:
                    self.state = "content"
            elif self.state == "reasoning":
                end = self.buf.find(THINK_CLOSE)
                if end >= 0:
                    out.append(("reasoning", self.buf[:end]))
                    self.state, self.buf = "after", self.buf[end + len(THINK_CLOSE) :]
                    continue
                keep = _held(self.buf, THINK_CLOSE)
                out.append(("reasoning", self.buf[: len(self.buf) - keep]))
                self.buf = self.buf[len(self.buf) - keep :]
                break
            elif self.state == "after":  # the whitespace between the reasoning and the answer
                self.buf = self.buf.lstrip()
                if self.buf:
                    self.state = "content"
            else:
                out.append(("content", self.buf))
                self.buf = ""
        return [(k, t) for k, t in out if t]

    def flush(self) -> list[tuple[Kind, str]]:
        rest, self.buf = self.buf, ""
        kind: Kind = "reasoning" if self.state == "reasoning" else "content"
        return [(kind, rest)] if rest else []


class CallStreamer:
    """Streams one constrained call (``{"name": …, "arguments": {…}}``) as deltas:
    id and name once the name is complete, then fragments of the arguments that
    concatenate to the final ``arguments`` string."""

    def __init__(self, index: int, send: Send) -> None:
        self.index = index
        self.send = send
        self.id = "call_" + secrets.token_hex(12)
        self.text = ""
        self.start: int | None = None
        self.sent = 0  # characters of the arguments already sent
        self.pending: list[TokenLogprob] = []  # logprobs of tokens not yet sent with a delta

    async def _send(self, delta: ToolCallDelta) -> None:
        lps, self.pending = self.pending or None, []
        await self.send("tool_call", "", delta, lps)

    async def feed(self, text: str, logprobs: Logprobs = None) -> None:
        self.text += text
        self.pending += logprobs or []
        if self.start is None:
            head = _CALL_HEAD.match(self.text)
            if head is None:
                return
            self.start = head.end()
            await self._send(ToolCallDelta(index=self.index, id=self.id, name=json.loads(f'"{head.group(1)}"')))
        end = len(self.text) - 1  # the last character may be the call's closing brace
        if end > self.start + self.sent:
            piece = self.text[self.start + self.sent : end]
            self.sent += len(piece)
            await self._send(ToolCallDelta(index=self.index, arguments=piece))

    async def finish(self) -> ToolCall | None:
        """The call, or None when the text is not one (it is then returned as text)."""
        try:
            obj = json.loads(self.text)
            name, args = obj["name"], obj["arguments"]
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(name, str) or not isinstance(args, dict):
            return None
        raw = self.text[self.start : self.text.rstrip().rfind("}")] if self.start is not None else ""
        try:
            same = json.loads(raw) == args
        except ValueError:
            same = False
        if not same or raw[: self.sent] != self.text[self.start : (self.start or 0) + self.sent]:
            raw = json.dumps(args)
        elif self.start is not None and (len(raw) > self.sent or self.pending):
            await self._send(ToolCallDelta(index=self.index, arguments=raw[self.sent :]))
        if self.start is None:
            await self._send(ToolCallDelta(index=self.index, id=self.id, name=name, arguments=raw))
        return ToolCall(id=self.id, name=name, arguments=raw)


@dataclass
class Answer:
    """One choice's answer and what the worker reported for each phase."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish: FinishReason = "stop"
    stop_sequence: str | None = None
    logprobs: list[TokenLogprob] | None = None
    warning: str | None = None
    results: list[EngineResult] = field(default_factory=list)
    queued_ms: float = 0.0  # how long the worker held its first phase before the engine took it


def _tools_in_play(params: ChatParams | CompleteParams) -> list[Tool]:
    if isinstance(params, ChatParams) and params.tools and params.tool_choice != "none":
        return list(params.tools)
    return []


class ChoiceRun:
    """Runs one choice through its phases, sending typed deltas as text arrives."""

    def __init__(self, params: ChatParams | CompleteParams, request: GenerateRequest, run: Run, send: Send, opened: bool = False) -> None:
        """``opened``: the rendered prompt ends inside ``<think>`` (the model's template
        opens the reasoning itself; docs/structured.md, Reasoning)."""
        self.params = params
        self.request = request
        self.run_phase = run
        self.send = send
        self.out = Answer()
        self.opened = opened and isinstance(params, ChatParams)
        self.split = ThinkSplitter(self.opened) if isinstance(params, ChatParams) else None
        self.pending: list[TokenLogprob] = []  # logprobs of text held back (a possible marker)
        self.after_call = False  # auto: the text now written follows a call (its layout comes first)
        self.gap = ""  # whitespace after a call, held until text follows it

    def _after_call(self, piece: str) -> str:
        """Text after a call: the whitespace that begins it separates it from the call
        (``</tool_call>`` and a newline, the Hermes layout); it is not the answer's text
        where it would begin ``content`` or double a break already there. Between two
        texts that do not already break (``Look.`` call ``\nSunny.``), it is what
        separates them, and stays."""
        self.gap += piece
        text = self.gap.lstrip()
        if not text:
            return ""
        gap, self.gap, self.after_call = self.gap[: len(self.gap) - len(text)], "", False
        if self.out.content and not self.out.content[-1].isspace():
            return gap + text
        return text

    async def _content(self, text: str, logprobs: Logprobs = None) -> None:
        self.pending += logprobs or []
        if self.split is None:
            await self._routed("content", text)
            return
        for kind, piece in self.split.feed(text):
            await self._routed(kind, piece)

    async def _routed(self, kind: Kind, piece: str) -> None:
        if kind == "content" and self.after_call:
            piece = self._after_call(piece)
        if kind == "reasoning":
            self.out.reasoning += piece
        else:
            self.out.content += piece
        lps, self.pending = self.pending or None, []
        if piece or lps:
            await self.send(kind, piece, None, lps)

    async def _flush(self) -> None:
        for kind, piece in self.split.flush() if self.split is not None else []:
            await self._routed(kind, piece)
        if self.pending:
            await self._routed("content", "")

    async def _phase(self, request: GenerateRequest, on_text: OnText) -> EngineResult:
        done = await self.run_phase(request, on_text)
        res = done.result
        if not self.out.results:
            self.out.queued_ms = done.queued_ms
        self.out.results.append(res)
        if res.logprobs is not None:
            self.out.logprobs = (self.out.logprobs or []) + list(res.logprobs)
        self.out.finish, self.out.stop_sequence = res.finish_reason, res.stop_sequence
        return res

    def _left(self) -> int:
        """Tokens of ``max_tokens`` not yet spent by earlier phases (0 when none)."""
        used = sum(r.completion_tokens for r in self.out.results)
        return max(0, self.request.sampling.max_tokens - used)

    async def run(self) -> Answer:
        params, req = self.params, self.request
        tools = _tools_in_play(params)
        choice = (params.tool_choice if isinstance(params, ChatParams) else None) or "auto"
        if tools:
            req = msgspec.structs.replace(req, tools=tools)
        forced = bool(tools) and choice != "auto"
        if (req.format is not None or forced) and isinstance(params, ChatParams) and (params.think or self.opened):
            # the reasoning stays free: think first, then the constrained answer (or call) after it
            opener = "" if self.opened else THINK_OPEN  # a template that opened it has written the opener already
            free = _phase_request(req, format=None, prefix=req.prefix + opener, stop=[THINK_CLOSE])
            await self._content(opener)
            res = await self._phase(free, self._content)
            if res.stop_sequence != THINK_CLOSE:  # the budget ran out, or the model ended, inside its reasoning
                await self._flush()
                return self.out
            self.out.stop_sequence = None
            await self._content(THINK_CLOSE)
            req = _phase_request(req, prefix=req.prefix + opener + res.text + THINK_CLOSE + "\n", max_tokens=max(1, self._left()))
        if forced:
            allowed = tools if choice == "required" else [t for t in tools if t.function.name == choice]
            await self._forced(req, allowed)
            return self.out
        if tools:
            await self._auto(req, tools)
            return self.out
        await self._phase(req, self._content)
        await self._flush()
        return self.out

    def _parallel(self) -> bool:
        """Whether another call may follow the last one: ``parallel_tool_calls`` with
        ``auto`` or ``required`` (a named function is called once), fewer than
        ``MAX_CALLS`` so far, and tokens left."""
        params = self.params
        more = isinstance(params, ChatParams) and params.parallel_tool_calls and params.tool_choice in (None, "auto", "required")
        return more and len(self.out.tool_calls) < MAX_CALLS and self._left() > 0

    async def _forced(self, req: GenerateRequest, allowed: list[Tool]) -> None:
        """``required`` or a named function: a call at once; with parallel calls, after
        each one a phase held to ``<tool_call>`` or nothing decides whether another follows."""
        prefix: str | None = req.prefix + TOOL_OPENER
        while prefix is not None:
            prefix = await self._call(req, allowed, prefix)
            if prefix is None or not self._parallel():
                break
            more = _phase_request(req, prefix=prefix, format=ANOTHER_CALL, stop=[], max_tokens=self._left())
            res = await self._phase(more, self._held)
            prefix = prefix + TOOL_OPENER if res.finish_reason == "stop" and res.text == TOOL_OPEN else None
            if prefix is not None and self._left() == 0:  # another call began where the budget ended
                self.out.finish, prefix = "length", None
                self.out.content += res.text  # what the model wrote comes back, as a cut call does
                self.out.warning = "max_tokens ran out as another tool call began; it is returned as text in content"
        self._calls_finished()
        await self._flush()

    async def _auto(self, req: GenerateRequest, tools: list[Tool]) -> None:
        """``auto``: free text until the model opens a call, then the call constrained;
        with parallel calls, free again after it (with the same stop), and so on."""
        prefix = req.prefix
        while True:
            free = _phase_request(req, prefix=prefix, stop=[*req.sampling.stop, TOOL_OPEN], max_tokens=max(1, self._left()))
            res = await self._phase(free, self._content)
            opener = res.finish_reason == "stop" and res.stop_sequence == TOOL_OPEN
            if opener and self.split is not None and self.split.state == "reasoning":
                # a call written inside the still-open reasoning is part of the reasoning
                self.out.stop_sequence = None
                await self._content(TOOL_OPEN)
                prefix = prefix + res.text + TOOL_OPEN
                if self._left() == 0:
                    self.out.finish = "length"
                    break
                continue
            await self._flush()
            if not opener:
                break
            self.out.stop_sequence = None
            after = await self._call(req, tools, prefix + res.text + TOOL_OPENER)
            if after is None or not self._parallel():
                break
            self.after_call = True
            prefix = after
        self._calls_finished()
        await self._flush()  # logprobs of a call that did not parse

    def _calls_finished(self) -> None:
        """An answer whose calls all parsed and whose last phase ended normally says
        ``tool_calls``; one cut by ``max_tokens`` or cancelled says so instead."""
        if self.out.tool_calls and self.out.finish == "stop" and self.out.warning is None:
            self.out.finish = "tool_calls"
            self.out.stop_sequence = None

    async def _held(self, text: str, logprobs: Logprobs = None) -> None:
        """A phase whose text is Impetus's own marker: only its logprobs travel on."""
        self.pending += logprobs or []

    async def _call(self, req: GenerateRequest, allowed: list[Tool], prefix: str) -> str | None:
        """One call constrained to ``allowed``'s schema after ``prefix`` (which ends with
        the opener). The prefix after the closed call, or None when it did not parse."""
        schema = tool_call_schema([{"name": t.function.name, "parameters": t.function.parameters or None} for t in allowed])
        call_req = _phase_request(req, prefix=prefix, format=JsonSchemaFormat(schema=schema), stop=[], max_tokens=max(1, self._left()))
        streamer = CallStreamer(len(self.out.tool_calls), self.send)
        streamer.pending, self.pending = self.pending, []
        res = await self._phase(call_req, streamer.feed)
        call = await streamer.finish() if res.finish_reason == "stop" else None
        if call is not None:
            self.out.tool_calls.append(call)
            self.out.finish = "tool_calls"
            return f"{prefix}{streamer.text.strip()}\n{TOOL_CLOSE}\n"
        # never lost: what the model wrote comes back as text, with why
        self.out.content += TOOL_OPENER + streamer.text
        self.pending += streamer.pending
        why = {"length": "did not finish within max_tokens", "cancelled": "was cancelled"}.get(res.finish_reason, "did not parse")
        self.out.warning = f"the tool call {why}; it is returned as text in content"
        return None
