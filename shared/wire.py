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
"""

from __future__ import annotations

import time
import uuid
from typing import Any

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
    """A LiteLLM result as JSON-ready data (enums as their values). Its pydantic
    serialisation warnings are silenced: LiteLLM stores dicts where its models
    declare objects (a Responses `usage`), and the shaping below is what counts."""
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
    for choice in completion.get("choices", []):
        choice.setdefault("logprobs", None)
        message = choice.setdefault("message", {"role": "assistant"})
        message.setdefault("content", None)
        message.setdefault("refusal", None)
    return completion


class ChatStream:
    """A chat stream's chunks as OpenAI sends them (`CreateChatCompletionStreamResponse`).

    Every chunk carries the stream's one `id` and `created` (the first the
    provider gave). The usage chunk reaches only a caller who asked for it;
    the others then carry `usage: null`, as OpenAI's do. A chunk with neither
    choices nor usage (Azure's prompt-filter chunk, whose content LiteLLM
    does not keep) is not sent.
    """

    def __init__(self, caller_wants_usage: bool) -> None:
        self.caller_wants_usage = caller_wants_usage
        self.id = ""
        self.created = 0

    def chunk(self, result: Any, model_id: str) -> dict[str, Any] | None:
        chunk = _shaped(_plain(result))
        usage = chunk.pop("usage", None)
        if not chunk.get("choices") and not (usage and self.caller_wants_usage):
            return None
        self.id = self.id or chunk.get("id") or f"chatcmpl-{uuid.uuid4().hex}"
        self.created = self.created or chunk.get("created") or int(time.time())
        chunk |= {"id": self.id, "created": self.created, "model": model_id}
        chunk.setdefault("choices", [])
        if self.caller_wants_usage:
            chunk["usage"] = usage
            _usage(chunk)
        for choice in chunk["choices"]:
            choice.setdefault("delta", {})
            choice.setdefault("finish_reason", None)
            choice.setdefault("logprobs", None)
        return chunk


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
    usage = shaped.get("usage")
    if isinstance(usage, dict):
        usage.pop("cost", None)
        usage["input_tokens_details"] = {"cached_tokens": 0, "cache_write_tokens": 0} | usage.get(
            "input_tokens_details", {}
        )
        usage["output_tokens_details"] = {"reasoning_tokens": 0} | usage.get("output_tokens_details", {})
    return shaped


def response_event(result: Any, model_id: str) -> dict[str, Any]:
    """A `ResponseStreamEvent`; the response some events carry is shaped as `response` does."""
    shaped = _shaped(_plain(result))
    event = _EVENT_DEFAULTS.get(shaped.get("type"), {}) | shaped
    if isinstance(event.get("response"), dict):
        event["response"] = _response(event["response"], model_id)
    return event


def embeddings(result: Any, model_id: str) -> dict[str, Any]:
    """A `CreateEmbeddingResponse`."""
    shaped = _shaped(_plain(result))
    shaped["model"] = model_id
    _usage(shaped)
    return shaped


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
