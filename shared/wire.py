"""OpenAI's wire format: the one place provider results are shaped for callers.

LiteLLM answers with OpenAI-like objects that OpenAI's schema
(`spec/openai-openapi.json`) does not always accept: it writes `null` where
the schema wants a field absent or typed (`tool_calls: null`,
`prompt_tokens_details.cached_tokens: null`), leaves out fields the schema
requires but allows to be null (`choices[].logprobs`, `message.refusal`, a
chunk's `finish_reason`), moves what the provider added (Azure's
`content_filter_results`) into `provider_specific_fields`, and adds its own
cost estimate to `usage`. The rules, the same for every operation:

1. What LiteLLM moved into `provider_specific_fields` goes back beside it.
2. Nulls are dropped, except for fields the schema requires and allows to be
   null: those are always present, null when the provider gave nothing.
   Log probabilities are passed on as they came (they are OpenAI's shape,
   nulls included).
3. Everything else the provider sent is kept: Azure's
   `prompt_filter_results` and `content_filter_results`,
   `system_fingerprint`, `service_tier`, reasoning content...
4. `model` is the catalog id the caller used; LiteLLM's `usage.cost` is
   dropped (the gateway prices calls from the catalog).

The caller's stream events (`Event`, `Framed`) and the gateway's one JSON
encoder (`json_bytes`) live here too, below both the transports that make
them and the HTTP layer that sends them.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .errors import UpstreamError

#: One server-sent event for the caller: its name (or None) and its payload.
Event = tuple[str | None, Any]


@dataclass(frozen=True, slots=True)
class Framed:
    """An event payload that already is SSE bytes (one or more whole events), sent as it is."""

    data: bytes


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON, the gateway's one encoder. A lone surrogate (which
    UTF-8 cannot hold) is written as its JSON escape, so any string can be encoded."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(errors="backslashreplace")


def sse_data(payload: Any) -> bytes:
    """One server-sent event of `payload` as JSON, without an event name (a `Framed` holds such events)."""
    return b"data: " + json_bytes(payload) + b"\n\n"


def sse_payloads(data: bytes) -> list[Any]:
    """The JSON payloads of the events `sse_data` wrote (what a `Framed` holds), in order."""
    return [json.loads(event[len(b"data: ") :]) for event in data.split(b"\n\n") if event.startswith(b"data: ")]


_PROVIDER_FIELDS = "provider_specific_fields"
#: Subtrees passed on untouched: already OpenAI's shape, where `null` is meaningful.
_VERBATIM = frozenset({"logprobs"})

#: Response fields OpenAI's schema requires, and what they are when the provider left them out.
_RESPONSE_DEFAULTS: dict[str, Any] = {
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "metadata": {},
    "tools": [],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "temperature": None,
    "top_p": None,
}
#: Stream event fields OpenAI's schema requires that LiteLLM's events can lack, with their empty value.
_EVENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "response.output_text.delta": {"logprobs": []},
    "response.output_text.done": {"logprobs": []},
}

#: What OpenAI's image usage (`ImageGenUsage`) must have; partial counts are not sent.
_IMAGE_USAGE_FIELDS = frozenset({"input_tokens", "output_tokens", "total_tokens", "input_tokens_details"})


def _plain(result: Any) -> dict[str, Any]:
    """A LiteLLM result as JSON-ready data (enums as their values), or such data
    as it is. Its pydantic serialisation warnings are silenced: LiteLLM stores
    dicts where its models declare objects (a Responses `usage`), and the
    shaping below is what counts."""
    if isinstance(result, dict):
        return result
    return result.model_dump(mode="json", warnings=False)


def _shaped(value: Any) -> Any:
    """`value` without nulls, provider fields lifted back into place (rules 1 and 2)."""
    if isinstance(value, list):
        return [_shaped(item) for item in value]
    if not isinstance(value, dict):
        return value
    fields = {key: item for key, item in value.items() if item is not None}
    provider_fields = fields.pop(_PROVIDER_FIELDS, None)
    if isinstance(provider_fields, dict):
        fields = provider_fields | fields
    return {key: item if key in _VERBATIM else _shaped(item) for key, item in fields.items() if item is not None}


def _usage(payload: dict[str, Any]) -> None:
    usage = payload.get("usage")
    if isinstance(usage, dict):
        usage.pop("cost", None)


def chat_completion(result: Any, model_id: str) -> dict[str, Any]:
    """A `CreateChatCompletionResponse`."""
    completion = _shaped(_plain(result))
    completion["model"] = model_id
    _usage(completion)
    return chat_completion_defaults(completion)


class ChatStream:
    """A chat stream's chunks as OpenAI sends them (`CreateChatCompletionStreamResponse`).

    Every chunk carries the stream's one `id` and `created` (the first the
    provider gave). The usage chunk reaches only a caller who asked for it;
    the others then carry `usage: null`, as OpenAI's do. A chunk with neither
    choices nor usage (Azure's prompt-filter chunk, whose content LiteLLM
    does not keep) is not sent. `usage` is the provider's count, whether or
    not the caller gets it, and `model` the provider's name for its model.
    """

    #: How a stream id the provider did not give begins.
    id_prefix = "chatcmpl-"

    def __init__(self, model_id: str, caller_wants_usage: bool) -> None:
        self.model_id = model_id
        self.caller_wants_usage = caller_wants_usage
        self.id = ""
        self.created = 0
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None

    def event(self, result: Any) -> Event | None:
        """The SSE event for one of LiteLLM's chunks, or None when it is not sent."""
        chunk = _shaped(_plain(result))
        usage = chunk.pop("usage", None)
        if usage:
            self.usage = usage
        if not chunk.get("choices") and not (usage and self.caller_wants_usage):
            return None
        self.id = self.id or chunk.get("id") or f"{self.id_prefix}{uuid.uuid4().hex}"
        self.created = self.created or chunk.get("created") or int(time.time())
        self.model = self.model or chunk.get("model") or None
        chunk |= {"id": self.id, "created": self.created, "model": self.model_id}
        if self.caller_wants_usage:
            chunk["usage"] = usage
            _usage(chunk)
        return None, self.defaults(chunk)

    @staticmethod
    def defaults(chunk: dict[str, Any]) -> dict[str, Any]:
        return chunk_defaults(chunk)


def text_completion(result: Any, model_id: str) -> dict[str, Any]:
    """A legacy `CreateCompletionResponse` (`object: text_completion`)."""
    completion = _shaped(_plain(result))
    completion["model"] = model_id
    _usage(completion)
    return text_completion_defaults(completion)


def text_completion_defaults(completion: dict[str, Any]) -> dict[str, Any]:
    """A legacy completion or stream chunk with the fields OpenAI's schema
    requires of each choice: its `text` (empty when the provider sent none, as
    on a stream's finishing chunk), `logprobs` and `finish_reason` (null until
    the choice finishes, as OpenAI streams it); `usage` only where there is one
    (the schema does not let it be null, unlike a chat chunk's)."""
    if completion.get("usage") is None:
        completion.pop("usage", None)
    for choice in completion.setdefault("choices", []):
        choice.setdefault("text", "")
        choice.setdefault("logprobs", None)
        choice.setdefault("finish_reason", None)
    return completion


class TextCompletionStream(ChatStream):
    """A legacy completion stream's chunks (`CreateCompletionResponse` each), by `ChatStream`'s rules."""

    id_prefix = "cmpl-"

    @staticmethod
    def defaults(chunk: dict[str, Any]) -> dict[str, Any]:
        return text_completion_defaults(chunk)


# Relayed answers: an OpenAI-native provider's bytes (Azure OpenAI chat
# completions and embeddings), kept as they came.
#
# The provider's bytes already are OpenAI's wire format, so they are passed on
# as they are, except for what the rules above change: `model` becomes the
# catalog id (spliced into the bytes), a chunk with neither choices nor a usage
# the caller asked for is not sent, and a caller who did not ask for usage
# gets neither the usage chunk nor `"usage": null` (the gateway always asks,
# to meter). A body that lacks a field OpenAI's schema requires is re-encoded
# with it, as `chat_completion` and `ChatStream` would.

_USAGE_NULL = re.compile(rb',\s*"usage"\s*:\s*null')


def _spliced(raw: bytes, parsed: dict[str, Any], model_id: str) -> bytes:
    """`raw` with its top-level `model` value replaced by `model_id`; re-encoded
    if that value does not occur exactly once as a `"model":` member."""
    upstream = parsed.get("model")
    if upstream == model_id:
        return raw
    old = json.dumps(upstream).encode()
    member = re.compile(rb'"model"\s*:\s*' + re.escape(old))
    spliced, count = member.subn(lambda found: found.group(0)[: -len(old)] + json.dumps(model_id).encode(), raw, 2)
    return spliced if count == 1 else json_bytes(parsed | {"model": model_id})


def relayed_completion(raw: bytes, model_id: str) -> tuple[bytes, dict[str, Any]]:
    """A relayed `CreateChatCompletionResponse`'s bytes for the caller, and the parsed body."""
    parsed = _relayed_json(raw, model_id, "choices")
    choices = parsed.get("choices") or []
    complete = all(
        "logprobs" in choice and {"content", "refusal"} <= set(choice.get("message") or ()) for choice in choices
    )
    if complete:
        return _spliced(raw, parsed, model_id), parsed
    return json_bytes(chat_completion_defaults(parsed | {"model": model_id})), parsed


def chat_completion_defaults(completion: dict[str, Any]) -> dict[str, Any]:
    """`completion` with the fields OpenAI's schema requires and allows to be null."""
    for choice in completion.get("choices", []):
        choice.setdefault("logprobs", None)
        message = choice.setdefault("message", {"role": "assistant"})
        message.setdefault("content", None)
        message.setdefault("refusal", None)
    return completion


def chunk_defaults(chunk: dict[str, Any]) -> dict[str, Any]:
    """A stream `chunk` with the fields OpenAI's schema requires of it and allows to be null."""
    for choice in chunk.setdefault("choices", []):
        choice.setdefault("delta", {})
        choice.setdefault("finish_reason", None)
        choice.setdefault("logprobs", None)
    return chunk


def relayed_embeddings(raw: bytes, model_id: str) -> tuple[bytes, dict[str, Any]]:
    """A relayed `CreateEmbeddingResponse`'s bytes for the caller (floats or
    base64, as the caller asked the provider), and the parsed body."""
    parsed = _relayed_json(raw, model_id, "data")
    return _spliced(raw, parsed, model_id), parsed


def _relayed_json(raw: bytes, model_id: str, answer: str) -> dict[str, Any]:
    """A relayed JSON object; an error object in place of the `answer` field fails the call."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise UpstreamError(f"Model '{model_id}' answered with something other than a JSON object.")
    if "error" in parsed and not parsed.get(answer):
        raise UpstreamError(f"Model '{model_id}' failed while answering.")
    return parsed


class RelayedChunks:
    """A relayed chat stream's chunks as the caller gets them (see the rules above);
    `usage` is the provider's count, whether or not the caller gets it, and
    `model` the provider's name for its model."""

    def __init__(self, model_id: str, caller_wants_usage: bool) -> None:
        self.model_id = model_id
        self.caller_wants_usage = caller_wants_usage
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None

    def frame(self, events: list[bytes]) -> tuple[bytes, UpstreamError | None]:
        """The SSE frame for the `data:` payloads of some events (empty when none is kept)
        and, when one of them is an error, the failure: the chunks before it are kept,
        however the provider's bytes were split into reads."""
        kept: list[bytes] = []
        failure = None
        for data in events:
            try:
                chunk = self.chunk(data)
            except UpstreamError as error:
                failure = error
                break
            if chunk is not None:
                kept += (b"data: ", chunk, b"\n\n")
        return b"".join(kept), failure

    def chunk(self, data: bytes) -> bytes | None:
        """One event's bytes for the caller, or None when it is not sent."""
        if data == b"[DONE]":
            return None  # the gateway's own marker ends the stream
        chunk = _relayed_json(data, self.model_id, "choices")
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        choices = chunk.get("choices")
        if not choices and not (usage and self.caller_wants_usage):
            return None
        self.model = self.model or chunk.get("model") or None
        if not all({"delta", "finish_reason", "logprobs"} <= set(choice) for choice in choices or ()):
            return self._reencoded(chunk)
        if not self.caller_wants_usage:
            data = _USAGE_NULL.sub(b"", data, count=1)
            chunk.pop("usage", None)
        return _spliced(data, chunk, self.model_id)

    def _reencoded(self, chunk: dict[str, Any]) -> bytes:
        if not self.caller_wants_usage:
            chunk.pop("usage", None)
        return json_bytes(chunk_defaults(chunk) | {"model": self.model_id})


def response(result: Any, model_id: str) -> dict[str, Any]:
    """A Responses API `Response`."""
    return _response(_plain(result), model_id)


def _response(payload: dict[str, Any], model_id: str) -> dict[str, Any]:
    shaped = _RESPONSE_DEFAULTS | _shaped(payload)
    shaped["model"] = model_id
    for item in shaped.get("output", []):
        for part in item.get("content", []) if item.get("type") == "message" else ():
            if part.get("type") == "output_text":
                part.setdefault("annotations", [])
                part.setdefault("logprobs", [])
    _usage(shaped)
    usage = shaped.get("usage")
    if isinstance(usage, dict):
        usage["input_tokens_details"] = {"cached_tokens": 0, "cache_write_tokens": 0} | usage.get(
            "input_tokens_details", {}
        )
        usage["output_tokens_details"] = {"reasoning_tokens": 0} | usage.get("output_tokens_details", {})
    return shaped


class ResponseEvents:
    """A Responses API stream's events (`ResponseStreamEvent`); the response some
    events carry is shaped as `response` does, and its `usage` kept."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None

    def event(self, result: Any) -> Event:
        shaped = _shaped(_plain(result))
        event = _EVENT_DEFAULTS.get(shaped.get("type"), {}) | shaped
        response = event.get("response")
        if isinstance(response, dict):
            self.model = response.get("model") or self.model
            event["response"] = _response(response, self.model_id)
            self.usage = event["response"].get("usage") or self.usage
        return event.get("type"), event


def embeddings(result: Any, model_id: str) -> dict[str, Any]:
    """A `CreateEmbeddingResponse`."""
    shaped = _shaped(_plain(result))
    shaped["model"] = model_id
    _usage(shaped)
    return shaped


def base64_embeddings(payload: dict[str, Any]) -> dict[str, Any]:
    """Embeddings as OpenAI's base64 encoding: little-endian float32 arrays."""
    for item in payload.get("data", []):
        vector = item["embedding"]
        item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return payload


def images(result: Any) -> dict[str, Any]:
    """An `ImagesResponse`: the images, and the token usage when the provider counted it.
    LiteLLM also echoes request settings (some it made up, such as a default
    size) that OpenAI's schema would read as facts about the images: not sent."""
    shaped = _shaped(_plain(result))
    generated = {"created": shaped.get("created") or int(time.time()), "data": shaped.get("data", [])}
    _usage(shaped)
    if set(shaped.get("usage") or ()) >= _IMAGE_USAGE_FIELDS:
        generated["usage"] = shaped["usage"]
    return generated


def transcription(result: Any) -> dict[str, Any]:
    """A `CreateTranscriptionResponseJson` or `...VerboseJson`, without LiteLLM's `_` bookkeeping fields."""
    shaped = _shaped(_plain(result))
    return {key: value for key, value in shaped.items() if not key.startswith("_")}
