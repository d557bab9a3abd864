"""The Mock model's transport: no provider is called, the gateway answers.

It stands in for a provider in callers' tests and CI, so it answers what
they send the way OpenAI would: chat completions, the Responses API and
legacy completions, whole or streamed, with a tool call when tools are offered (`tool_call` in
the catalog's parameters chooses it), JSON for a `json_object` or
`json_schema` response format, a new id and the current time on each answer,
and embeddings of the `dimensions` asked for. The answers are OpenAI's wire
format before `wire.py` shapes them, as a provider's would be.

A `response` that names a failure (`FAILURES`) makes every call fail as a
provider's failure with that status would.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from .. import wire
from ..domain import LLMModel, Operation
from ..errors import InvalidRequest
from .base import Answer, Request, Upstream
from .errors import from_status
from .litellm_calls import LiteLLMStream
from .mapper import ProviderCall
from .schema_instance import instance

DEFAULT_RESPONSE = "Hello! This is the gateway's Mock model: no provider was called."
DEFAULT_DIMENSIONS = 8
#: `response` values that stand for a failing provider, and the provider status each stands for
#: (LiteLLM's names for them, which the Mock model has always read).
FAILURES = {
    "litellm.RateLimitError": 429,
    "litellm.ContextWindowExceededError": 400,
    "litellm.InternalServerError": 500,
}
#: Where a message or input item carries text a token count reads.
TEXT_FIELDS = ("content", "text", "output", "arguments")


@dataclass(frozen=True)
class ToolCall:
    name: str
    #: JSON text, as OpenAI sends a call's arguments.
    arguments: str


@dataclass(frozen=True)
class Reply:
    """What the Mock answers a request: text or a tool call."""

    text: str | None
    tool_call: ToolCall | None
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return _count(self.tool_call.arguments if self.tool_call else self.text or "")


class Mock:
    """The Mock model's transport (a `base.Transport`): every answer made here."""

    async def whole(self, model: LLMModel, call: ProviderCall, request: Request) -> Answer[Any]:
        parameters = _parameters(model, call)
        code = call.deployment.code
        if request.operation is Operation.EMBEDDINGS:
            dimensions = request.body.get("dimensions") or parameters.get("dimensions", DEFAULT_DIMENSIONS)
            payload = mock_embeddings(request.body["input"], dimensions, model.id)
            usage = payload["usage"]
            if request.body.get("encoding_format") == "base64":
                payload = wire.base64_embeddings(payload)
            return Answer(payload, usage, code)
        if request.operation is Operation.RESPONSES:
            body = wire.response(response(request.body, parameters, code), model.id)
            return Answer(body, body["usage"], code)
        if request.operation is Operation.COMPLETION:
            body = wire.text_completion(text_completion(request.body, parameters, code), model.id)
            return Answer(body, body["usage"], code)
        assert request.operation is Operation.CHAT_COMPLETION, "a Mock model's catalog entry offers no other operation"
        body = wire.chat_completion(chat_completion(request.body, parameters, code), model.id)
        return Answer(body, body["usage"], code)

    async def stream(self, model: LLMModel, call: ProviderCall, request: Request) -> Upstream:
        parameters = _parameters(model, call)
        code = call.deployment.code
        # `LiteLLMStream` reads any async iterator of items through a `wire` shaper.
        if request.operation is Operation.RESPONSES:
            events = response_events(response(request.body, parameters, code))
            return LiteLLMStream(_each(events), model.id, (), wire.ResponseEvents(model.id))
        if request.operation is Operation.COMPLETION:
            pieces = text_chunks(text_completion(request.body, parameters, code))
            shaper = wire.TextCompletionStream(model.id, request.caller_wants_usage)
            return LiteLLMStream(_each(pieces), model.id, (), shaper)
        chunks = chat_chunks(chat_completion(request.body, parameters, code))
        return LiteLLMStream(_each(chunks), model.id, (), wire.ChatStream(model.id, request.caller_wants_usage))


def _parameters(model: LLMModel, call: ProviderCall) -> dict[str, Any]:
    """The deployment's parameters; a failure they name is raised here."""
    parameters = call.mock_parameters or {}
    status = FAILURES.get(parameters.get("response", ""))
    if status is not None:
        raise from_status(
            status, f"The Mock model '{model.id}' stands for a provider failing with {status}.", {}, model.id
        )
    return parameters


async def _each(items: Iterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for item in items:
        yield item


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def _count(text: str) -> int:
    """A token per word, at least one."""
    return max(1, len(text.split()))


def _texts(value: Any) -> Iterator[str]:
    """The text a conversation carries: message contents, content parts, tool arguments and outputs."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, dict):
        for key in TEXT_FIELDS:
            yield from _texts(value.get(key))
        for tool_call in value.get("tool_calls") or ():
            yield from _texts((tool_call.get("function") if isinstance(tool_call, dict) else None) or {})


def _pieces(text: str) -> list[str]:
    """`text` as a stream's deltas: a word each, with the space before it."""
    return re.findall(r"\s*\S+", text) or [text]


# What to answer: a tool call, JSON or text.


def _reply(
    parameters: dict[str, Any],
    tools: dict[str, Any],
    tool_choice: Any,
    answered_tool: bool,
    json_format: tuple[str, Any] | None,
    prompt: Any,
) -> Reply:
    """The Mock's answer. `tools` maps each offered function to its parameters'
    schema; `tool_choice` is OpenAI's, with a forced function as its name
    (`{"name": ...}`); `answered_tool` says the conversation ends with a tool's result."""
    prompt_tokens = _count(" ".join(_texts(prompt)))
    call = _tool_call(parameters, tools, tool_choice, answered_tool)
    if call is not None:
        return Reply(None, call, prompt_tokens)
    text = str(parameters.get("response", DEFAULT_RESPONSE))
    if json_format is not None:
        kind, schema = json_format
        text = json.dumps(instance(schema) if kind == "json_schema" else _json_object(text))
    return Reply(text, None, prompt_tokens)


def _json_object(text: str) -> dict[str, Any]:
    """`response` if it is a JSON object's text, else the object `{"response": text}`."""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"response": text}


def _tool_call(parameters: dict[str, Any], tools: dict[str, Any], tool_choice: Any, answered: bool) -> ToolCall | None:
    """The call OpenAI's `tool_choice` allows: none for `none`; for `auto`, the
    configured or first tool unless `tool_call` is false or a tool has just
    answered; for `required`, the configured or first tool; a forced one as named."""
    configured = parameters.get("tool_call", {})
    mode, forced, allowed = _choice(tool_choice, tools)
    if not allowed or mode == "none":
        return None
    if forced is None and mode == "auto" and (configured is False or answered):
        return None
    chosen = configured.get("name") if isinstance(configured, dict) else None
    name = forced or (chosen if chosen in allowed else next(iter(allowed)))
    if isinstance(configured, dict) and "arguments" in configured and chosen in (None, name):
        arguments = configured["arguments"]
    else:
        arguments = instance(allowed[name] or {"type": "object"})
    return ToolCall(name, json.dumps(arguments))


def _choice(tool_choice: Any, tools: dict[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
    """OpenAI's `tool_choice` as its mode, the function it forces, and the tools it allows."""
    if isinstance(tool_choice, str):
        return tool_choice, None, tools
    if not isinstance(tool_choice, dict):
        return "auto", None, tools
    if tool_choice.get("type") == "allowed_tools":
        # Chat nests the list under `allowed_tools`; the Responses API has it flat.
        listed = tool_choice.get("allowed_tools", tool_choice)
        names = {_function_name(tool) for tool in listed.get("tools", [])}
        return str(listed.get("mode", "auto")), None, {name: tools[name] for name in tools if name in names}
    if tool_choice.get("type") != "function":
        return "auto", None, tools
    forced = _function_name(tool_choice)
    if forced not in tools:
        raise InvalidRequest(
            f"'tool_choice' names the function '{forced}', which 'tools' does not offer.", param="tool_choice"
        )
    return "required", forced, tools


def _function_name(tool: Any) -> str | None:
    """A function tool's (or tool choice's) name, nested as chat has it or flat as the Responses API has it."""
    if not isinstance(tool, dict):
        return None
    nested = tool.get("function")
    return nested.get("name") if isinstance(nested, dict) else tool.get("name")


# Chat completions.


def chat_completion(body: dict[str, Any], parameters: dict[str, Any], code: str) -> dict[str, Any]:
    """A `CreateChatCompletionResponse` for `body`, `n` choices of the same answer."""
    messages = body.get("messages") or []
    tools = {
        tool["function"]["name"]: tool["function"].get("parameters")
        for tool in body.get("tools") or ()
        if tool.get("type") == "function"
    }
    answered_tool = bool(messages) and messages[-1].get("role") in ("tool", "function")
    response_format = body.get("response_format") or {}
    kind = response_format.get("type")
    json_format = (kind, (response_format.get("json_schema") or {}).get("schema")) if kind != "text" and kind else None
    reply = _reply(parameters, tools, body.get("tool_choice", "auto"), answered_tool, json_format, messages)
    choices = int(body.get("n") or 1)
    return {
        "id": _new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": code,
        "choices": [
            {
                "index": index,
                "message": _message(reply),
                "finish_reason": "stop" if reply.tool_call is None else "tool_calls",
                "logprobs": None,
            }
            for index in range(choices)
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens * choices,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens * choices,
        },
    }


def _message(reply: Reply) -> dict[str, Any]:
    """A choice's assistant message: the text, or the tool call (with its own id)."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
    if reply.tool_call is not None:
        function = {"name": reply.tool_call.name, "arguments": reply.tool_call.arguments}
        message["tool_calls"] = [{"id": _new_id("call_"), "type": "function", "function": function}]
    return message


def chat_chunks(completion: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A completion as OpenAI streams it: the role, the content or the tool
    call's arguments a word at a time, the finish reason, then the usage chunk."""
    head = {key: completion[key] for key in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    for choice in completion["choices"]:
        index, message = choice["index"], choice["message"]
        tool_calls = message.get("tool_calls") or []
        if tool_calls:
            function = tool_calls[0]["function"]
            opening = tool_calls[0] | {"index": 0, "function": {"name": function["name"], "arguments": ""}}
            yield head | {"choices": [{"index": index, "delta": {"role": "assistant", "tool_calls": [opening]}}]}
            for piece in _pieces(function["arguments"]):
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                yield head | {"choices": [{"index": index, "delta": delta}]}
        else:
            yield head | {"choices": [{"index": index, "delta": {"role": "assistant", "content": ""}}]}
            for piece in _pieces(message["content"]):
                yield head | {"choices": [{"index": index, "delta": {"content": piece}}]}
        yield head | {"choices": [{"index": index, "delta": {}, "finish_reason": choice["finish_reason"]}]}
    yield head | {"choices": [], "usage": completion["usage"]}


# Legacy completions.


def text_completion(body: dict[str, Any], parameters: dict[str, Any], code: str) -> dict[str, Any]:
    """A `CreateCompletionResponse` for `body`: for each prompt, `n` choices of
    `parameters.response` (after the prompt itself when `echo` asks for it, for a
    prompt given as text), numbered as OpenAI numbers them, prompt by prompt."""
    prompts = _inputs(body["prompt"])
    text = str(parameters.get("response", DEFAULT_RESPONSE))
    n = int(body.get("n") or 1)
    echo = bool(body.get("echo"))
    choices = [
        {
            "index": position * n + index,
            "text": (prompt if echo and isinstance(prompt, str) else "") + text,
            "logprobs": None,
            "finish_reason": "stop",
        }
        for position, prompt in enumerate(prompts)
        for index in range(n)
    ]
    prompt_tokens = sum(_tokens(prompt) for prompt in prompts)
    completion_tokens = _count(text) * len(choices)
    return {
        "id": _new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": code,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def text_chunks(completion: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A legacy completion as OpenAI streams it: each choice's text a word at a
    time, its finish reason on a last empty piece, then the usage chunk."""
    head = {key: completion[key] for key in ("id", "object", "created", "model")}
    for choice in completion["choices"]:
        for piece in _pieces(choice["text"]):
            yield head | {"choices": [choice | {"text": piece, "finish_reason": None}]}
        yield head | {"choices": [choice | {"text": ""}]}
    yield head | {"choices": [], "usage": completion["usage"]}


# The Responses API.

#: Request fields a `Response` repeats, as OpenAI's do.
ECHOED_FIELDS = (
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "previous_response_id",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
    "user",
)


def response(body: dict[str, Any], parameters: dict[str, Any], code: str) -> dict[str, Any]:
    """A completed `Response` for `body`: a message, or a function call."""
    given = body.get("input")
    items = given if isinstance(given, list) else []
    tools = {tool["name"]: tool.get("parameters") for tool in body.get("tools") or () if tool.get("type") == "function"}
    answered_tool = bool(items) and items[-1].get("type") == "function_call_output"
    text_format = (body.get("text") or {}).get("format") or {}
    kind = text_format.get("type")
    json_format = (kind, text_format.get("schema")) if kind != "text" and kind else None
    prompt = [given, body.get("instructions") or ""]
    reply = _reply(parameters, tools, body.get("tool_choice", "auto"), answered_tool, json_format, prompt)
    item: dict[str, Any]
    if reply.tool_call is not None:
        item = {
            "id": _new_id("fc_"),
            "type": "function_call",
            "status": "completed",
            "call_id": _new_id("call_"),
            "name": reply.tool_call.name,
            "arguments": reply.tool_call.arguments,
        }
    else:
        part: dict[str, Any] = {"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}
        item = {"id": _new_id("msg_"), "type": "message", "status": "completed", "role": "assistant", "content": [part]}
    echoed = {key: body[key] for key in ECHOED_FIELDS if key in body}
    if "tools" in echoed:
        echoed["tools"] = [_echoed_tool(tool) for tool in echoed["tools"]]
    return echoed | {
        "id": _new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": code,
        "output": [item],
        "usage": {
            "input_tokens": reply.prompt_tokens,
            "output_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }


def _echoed_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A request's tool as a `Response` lists it: a function's `strict` (true
    unless the caller said otherwise, OpenAI's default) and `parameters` always given."""
    if tool.get("type") != "function":
        return tool
    strict = tool.get("strict")
    return tool | {
        "strict": True if strict is None else strict,
        "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
    }


def response_events(completed: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A completed response as OpenAI streams it, each event numbered: created
    and in progress, its output item added, the text (or arguments) a word at
    a time, each part and item done, then completed."""
    numbers = iter(range(1 << 62))

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "sequence_number": next(numbers)} | fields

    started = completed | {"status": "in_progress", "output": [], "usage": None}
    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    for index, item in enumerate(completed["output"]):
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "function_call":
            yield event(
                "response.output_item.added", output_index=index, item=item | {"status": "in_progress", "arguments": ""}
            )
            for piece in _pieces(item["arguments"]):
                yield event("response.function_call_arguments.delta", **at, delta=piece)
            yield event("response.function_call_arguments.done", **at, name=item["name"], arguments=item["arguments"])
        else:
            yield event(
                "response.output_item.added", output_index=index, item=item | {"status": "in_progress", "content": []}
            )
            for position, part in enumerate(item["content"]):
                where = at | {"content_index": position}
                yield event("response.content_part.added", **where, part=part | {"text": ""})
                for piece in _pieces(part["text"]):
                    yield event("response.output_text.delta", **where, delta=piece, logprobs=[])
                yield event("response.output_text.done", **where, text=part["text"], logprobs=[])
                yield event("response.content_part.done", **where, part=part)
        yield event("response.output_item.done", output_index=index, item=item)
    yield event("response.completed", response=completed)


# Embeddings.


def mock_embeddings(given: Any, dimensions: int, model_id: str) -> dict[str, Any]:
    """A `CreateEmbeddingResponse`: for each input a unit vector of `dimensions`
    numbers drawn from the input itself (the same input, the same vector),
    a token per word or token id."""
    inputs = _inputs(given)
    tokens = sum(_tokens(item) for item in inputs)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": embedding_of(item, dimensions)}
            for index, item in enumerate(inputs)
        ],
        "model": model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _inputs(given: Any) -> list[Any]:
    """An embedding's inputs or a completion's prompts: texts, or lists of token ids."""
    return [given] if isinstance(given, str) or (given and isinstance(given[0], int)) else list(given)


def _tokens(item: str | list[int]) -> int:
    """A token per word of a text (at least one) or per token id."""
    return len(item) if isinstance(item, list) else _count(item)


def embedding_of(item: str | list[int], dimensions: int) -> list[float]:
    """A unit vector read from SHA-256 digests of `item`. A shorter one points
    the way a longer one's first numbers do, as OpenAI's shortened embeddings."""
    seed = (item if isinstance(item, str) else json.dumps(item)).encode()
    numbers: list[float] = []
    block = 0
    while len(numbers) < dimensions:
        digest = hashlib.sha256(block.to_bytes(4, "big") + seed).digest()
        numbers += [value / 2**31 - 1 for value in struct.unpack("<8I", digest)]
        block += 1
    vector = numbers[:dimensions]
    norm = math.sqrt(sum(value * value for value in vector)) or 1.0
    return [value / norm for value in vector]
