"""The Responses API over chat completions, for providers that have no Responses API of their own
(Vertex AI, Azure AI Foundry's model inference API).

`ResponsesOverChat` is a transport wrapping a deployment's own transport: a
Responses request is translated to a chat completion request, sent through
the wrapped transport (so a Gemini or Claude call takes the gateway's own
Vertex path, the other Vertex families and Foundry's models LiteLLM's), and
the chat completion, whole or streamed, is translated back to a `Response`
or to Responses stream events.
Every other operation goes to the wrapped transport unchanged.

The translation is the gateway's own, for what chat completions can carry:
instructions, text and image input (`input_text`, `input_image` by URL or
`data:` URL), earlier assistant turns, function tools, `function_call` and
`function_call_output` items, `tool_choice`, `max_output_tokens`,
`temperature`, `top_p` and `text.format` (JSON mode and structured output).
A request for what chat completions cannot express (hosted tools such as
web search, file inputs, `background`, `conversation`, stored prompts) is
refused with a 400 naming the field, before anything is sent. Other
Responses fields that only matter to OpenAI's own service (`store`,
`include`, `truncation`, `metadata`...) are not sent to the provider; a
field the gateway does not know is, as for chat completions.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from .. import validation, wire
from ..domain import LLMModel, Operation
from ..errors import InvalidRequest
from ..wire import Event
from .arguments import CHAT_COMPLETION_FIELDS, RESPONSES_FIELDS, maybe_streamed
from .base import Answer, Request, Transport, Upstream
from .mapper import ProviderCall

#: Responses fields that are OpenAI's service's business, not the model's: not sent to the provider.
_NOT_SENT = frozenset(
    {
        "store",
        "include",
        "truncation",
        "metadata",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "service_tier",
        "stream_options",
        "previous_response_id",
        "max_tool_calls",
        "top_logprobs",
        "moderation",
        "context_management",
    }
)
#: Responses fields chat completions cannot carry: refused.
_REFUSED = ("background", "conversation", "prompt")
#: Fields translated below.
_TRANSLATED = frozenset(
    {
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "temperature",
        "top_p",
        "text",
        "reasoning",
        "stream",
    }
)
#: Chat finish reasons that leave a response incomplete, and why.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """The chat completion request for a Responses request (`model` kept); a 400 for what cannot be sent."""
    for name in _REFUSED:
        if body.get(name):
            raise InvalidRequest(f"'{name}' is not supported for this model.", param=name)
    chat: dict[str, Any] = {"model": body["model"], "messages": _messages(body)}
    tools = [_tool(tool, index) for index, tool in enumerate(body.get("tools") or [])]
    if tools:
        chat["tools"] = tools
        if body.get("tool_choice") is not None:
            chat["tool_choice"] = _tool_choice(body["tool_choice"])
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    for source, target in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p")):
        if body.get(source) is not None:
            chat[target] = body[source]
    response_format = _response_format((body.get("text") or {}).get("format"))
    if response_format is not None:
        chat["response_format"] = response_format
    effort = (body.get("reasoning") or {}).get("effort")
    if effort:
        chat["reasoning_effort"] = effort
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    known = RESPONSES_FIELDS | {"model"}
    chat |= {name: value for name, value in body.items() if name not in known}
    return chat


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    given = body["input"]
    if isinstance(given, str):
        return [*messages, {"role": "user", "content": given}]
    for index, item in enumerate(given):
        kind = item.get("type", "message")
        where = f"input[{index}]"
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            call = {
                "id": item.get("call_id") or item.get("id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"},
            }
            previous = messages[-1] if messages else None
            if previous is not None and previous["role"] == "assistant":
                previous.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            content = output if isinstance(output, str) else _text_of(output, f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": content})
        elif kind == "reasoning":
            continue  # a provider's own reasoning of an earlier turn: chat completions cannot take it back
        else:
            raise InvalidRequest(f"Input items of type '{kind}' are not supported for this model.", param=where)
    return messages


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise InvalidRequest(f"'{where}.role' must be user, assistant, system or developer.", param=f"{where}.role")
    role = "system" if role == "developer" else role
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}.content' must be a string or a list of parts.", param=f"{where}.content")
    if role != "user":
        return {"role": role, "content": _text_of(content, f"{where}.content")}
    return {"role": role, "content": [_part(part, f"{where}.content[{i}]") for i, part in enumerate(content)]}


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": part.get("text", "")}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise InvalidRequest(
                "Only images given by 'image_url' (a URL or a data: URL) are supported for this model.",
                param=f"{where}.image_url",
            )
        image = {"url": url} | ({"detail": part["detail"]} if part.get("detail") in ("low", "high") else {})
        return {"type": "image_url", "image_url": image}
    raise InvalidRequest(f"Content parts of type '{kind}' are not supported for this model.", param=f"{where}.type")


def _text_of(content: Any, where: str) -> str:
    """The text of a list of text parts (earlier assistant turns, system messages, tool outputs)."""
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}' must be a string or a list of text parts.", param=where)
    texts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "output_text", "text", "refusal"):
            raise InvalidRequest(f"'{where}[{index}]' must be a text part for this model.", param=f"{where}[{index}]")
        texts.append(str(part.get("text", part.get("refusal", ""))))
    return "".join(texts)


def _tool(tool: dict[str, Any], index: int) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise InvalidRequest(
            f"Tools of type '{tool.get('type')}' are not supported for this model: only function tools.",
            param=f"tools[{index}].type",
        )
    function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if tool.get(key) is not None}
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if isinstance(choice, str):
        return choice
    raise InvalidRequest("'tool_choice' must be auto, none, required or a function.", param="tool_choice")


def _response_format(given: Any) -> dict[str, Any] | None:
    if not isinstance(given, dict) or given.get("type") in (None, "text"):
        return None
    if given["type"] == "json_object":
        return {"type": "json_object"}
    if given["type"] == "json_schema":
        schema = {key: given[key] for key in ("name", "schema", "strict", "description") if key in given}
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest("'text.format.type' must be text, json_object or json_schema.", param="text.format.type")


def _echoed(body: dict[str, Any]) -> dict[str, Any]:
    """What a `Response` repeats of its request."""
    echoed: dict[str, Any] = {
        "instructions": body.get("instructions"),
        # OpenAI's schema wants a function tool's `strict`; none given, none was enforced.
        "tools": [tool | {"strict": bool(tool.get("strict"))} for tool in body.get("tools") or []],
        "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "max_output_tokens": body.get("max_output_tokens"),
        "text": body.get("text") or {"format": {"type": "text"}},
        "metadata": body.get("metadata") or {},
    }
    return {key: value for key, value in echoed.items() if value is not None}


def _usage(usage: Any) -> dict[str, Any] | None:
    """A chat usage as a Responses usage."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens_details": {"reasoning_tokens": reasoning},
    }


def _status(finish_reason: str | None) -> dict[str, Any]:
    reason = _INCOMPLETE.get(finish_reason or "")
    if reason is None:
        return {"status": "completed", "incomplete_details": None}
    return {"status": "incomplete", "incomplete_details": {"reason": reason}}


def _text_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _reasoning_item(text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": new_id("rs"), "summary": [{"type": "summary_text", "text": text}]}


def response(completion: dict[str, Any], body: dict[str, Any], model_id: str) -> dict[str, Any]:
    """The `Response` for a whole chat completion (`wire.chat_completion`'s shape) to `body`."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    if message.get("reasoning_content"):
        output.append(_reasoning_item(message["reasoning_content"]))
    if message.get("content"):
        output.append(_text_item(new_id("msg"), message["content"]))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(
            _call_item(
                new_id("fc"),
                call.get("id") or new_id("call"),
                function.get("name", ""),
                function.get("arguments") or "",
            )
        )
    made = {
        "id": new_id("resp"),
        "object": "response",
        "created_at": completion.get("created") or int(time.time()),
        "model": model_id,
        "output": output,
        "usage": _usage(completion.get("usage")),
    }
    return wire.response(made | _echoed(body) | _status(choice.get("finish_reason")), model_id)


@dataclass
class _OpenItem:
    """An output item a stream is producing."""

    index: int
    item: dict[str, Any]
    text: list[str] = field(default_factory=list)


class ResponsesFromChat:
    """A chat stream's chunks as Responses stream events (a `base.Upstream`).

    The stream opens with `response.created` and `response.in_progress`; text
    comes as one message item (`output_text` deltas), each tool call as a
    `function_call` item (argument deltas), each item closed with its `done`
    events once the next begins or the chat stream ends; the last event is
    `response.completed` (or `response.incomplete`) carrying the whole response
    and its usage. Every event carries its `sequence_number`.
    """

    def __init__(self, chat: Upstream, body: dict[str, Any], model_id: str) -> None:
        self.chat = chat
        self.body = body
        self.model_id = model_id
        self.id = new_id("resp")
        self.created_at = int(time.time())
        self._sequence = 0
        self._output: list[dict[str, Any]] = []
        self._text: _OpenItem | None = None
        self._calls: dict[int, _OpenItem] = {}
        self._finish: str | None = None

    @property
    def usage(self) -> Any:
        return self.chat.usage

    @property
    def model(self) -> str | None:
        return self.chat.model

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence} | fields
        self._sequence += 1
        return kind, event

    def _response(self, status: dict[str, Any], usage: Any = None) -> dict[str, Any]:
        made = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "model": self.model_id,
            "output": list(self._output),
            "usage": _usage(usage),
        }
        return wire.response(made | _echoed(self.body) | status, self.model_id)

    async def events(self) -> AsyncGenerator[Event | None, None]:
        started = False
        async for event in self.chat.events():
            chunks = _chat_chunks(event)
            if not chunks:  # nothing sent for this read
                yield None
                continue
            if not started:
                started = True
                in_progress = self._response({"status": "in_progress", "incomplete_details": None})
                yield self._event("response.created", response=in_progress)
                yield self._event("response.in_progress", response=in_progress)
            for chunk in chunks:
                for choice in chunk.get("choices") or []:
                    self._finish = choice.get("finish_reason") or self._finish
                    for produced in self._delta(choice.get("delta") or {}):
                        yield produced
        if not started:
            return
        for produced in self._close_text():
            yield produced
        for index in sorted(self._calls):
            for produced in self._close_call(self._calls[index]):
                yield produced
        status = _status(self._finish)
        final = "response.completed" if status["status"] == "completed" else "response.incomplete"
        yield self._event(final, response=self._response(status, self.chat.usage))

    def _delta(self, delta: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        text = delta.get("content")
        if text:
            if self._text is None:
                self._text = _OpenItem(len(self._output), _text_item(new_id("msg"), "", status="in_progress"))
                self._output.append(self._text.item)
                item = self._text.item
                events.append(self._event("response.output_item.added", output_index=self._text.index, item=item))
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                events.append(
                    self._event(
                        "response.content_part.added",
                        item_id=item["id"],
                        output_index=self._text.index,
                        content_index=0,
                        part=part,
                    )
                )
            self._text.text.append(text)
            events.append(
                self._event(
                    "response.output_text.delta",
                    item_id=self._text.item["id"],
                    output_index=self._text.index,
                    content_index=0,
                    delta=text,
                    logprobs=[],
                )
            )
        for call in delta.get("tool_calls") or []:
            position = int(call.get("index") or 0)
            function = call.get("function") or {}
            opened = self._calls.get(position)
            if opened is None:
                events += self._close_text()
                item = _call_item(
                    new_id("fc"), call.get("id") or new_id("call"), function.get("name") or "", "", "in_progress"
                )
                opened = self._calls[position] = _OpenItem(len(self._output), item)
                self._output.append(item)
                events.append(self._event("response.output_item.added", output_index=opened.index, item=dict(item)))
            arguments = function.get("arguments")
            if arguments:
                opened.text.append(arguments)
                events.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        item_id=opened.item["id"],
                        output_index=opened.index,
                        delta=arguments,
                    )
                )
        return events

    def _close_text(self) -> list[Event]:
        opened, self._text = self._text, None
        if opened is None:
            return []
        text = "".join(opened.text)
        item = _text_item(opened.item["id"], text)
        self._output[opened.index] = item
        where = {"item_id": item["id"], "output_index": opened.index, "content_index": 0}
        return [
            self._event("response.output_text.done", **where, text=text, logprobs=[]),
            self._event("response.content_part.done", **where, part=item["content"][0]),
            self._event("response.output_item.done", output_index=opened.index, item=item),
        ]

    def _close_call(self, opened: _OpenItem) -> list[Event]:
        arguments = "".join(opened.text)
        given = opened.item
        item = _call_item(given["id"], given["call_id"], given["name"], arguments)
        self._output[opened.index] = item
        return [
            self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=opened.index,
                name=item["name"],
                arguments=arguments,
            ),
            self._event("response.output_item.done", output_index=opened.index, item=item),
        ]

    async def close(self, completed: bool) -> None:
        await self.chat.close(completed)


class ResponsesOverChat:
    """The Responses API of `chat`'s deployments, through their chat completions; other operations to `chat`."""

    def __init__(self, chat: Transport) -> None:
        self.chat = chat

    async def whole(self, model: LLMModel, call: ProviderCall, request: Request) -> Answer[Any]:
        if request.operation is not Operation.RESPONSES:
            return await self.chat.whole(model, call, request)
        answer = await self.chat.whole(model, call, _chat(request.body))
        return Answer(response(answer.body, request.body, model.id), answer.usage, answer.model)

    async def stream(self, model: LLMModel, call: ProviderCall, request: Request) -> Upstream:
        if request.operation is not Operation.RESPONSES:
            return await self.chat.stream(model, call, request)
        chat = await self.chat.stream(model, call, _chat(request.body))
        return ResponsesFromChat(chat, request.body, model.id)


def _chat_chunks(event: Event | None) -> list[dict[str, Any]]:
    """The chat chunks one event of a chat stream carries: a chunk, or the chunks
    of a frame the provider's transport already wrote as SSE (`wire.Framed`)."""
    payload = event[1] if event is not None else None
    if isinstance(payload, wire.Framed):
        return [chunk for chunk in wire.sse_payloads(payload.data) if isinstance(chunk, dict)]
    return [payload] if isinstance(payload, dict) else []


def _chat(body: dict[str, Any]) -> Request:
    """The chat completion request for a Responses body, checked and made as the gateway's chat
    use case makes a caller's (its usage is always read: a Response carries it)."""
    chat = chat_request(body)
    validation.chat_completion(chat)
    return dataclasses.replace(
        maybe_streamed(Operation.CHAT_COMPLETION, chat, CHAT_COMPLETION_FIELDS), caller_wants_usage=True
    )
