"""A request body as LiteLLM's keyword arguments.

The fields LiteLLM translates per provider go to it as arguments; any other
field goes in `extra_body`, sent upstream as it came. Nothing a caller sends
can become a LiteLLM-only argument (an `api_base`, a credential, a mock), so
a caller cannot redirect the gateway's credentials. The readers of
`payloads.py` check a caller's body, then make it a `Request` here; so does
`responses_chat.py`, for the chat completion it sends for a Responses request.
"""

from __future__ import annotations

from typing import Any

from ..domain import Operation
from .base import Request

#: CreateChatCompletionRequest's properties in OpenAI's API schema, less `model`
#: and less the fields LiteLLM refuses for Azure deployments it does not know
#: (`service_tier`, `verbosity`, `safety_identifier`) or keeps for itself
#: (`metadata`): those travel in `extra_body`, untouched.
CHAT_COMPLETION_FIELDS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "messages",
        "modalities",
        "moderation",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "seed",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "web_search_options",
    }
)


#: CreateCompletionRequest's fields that LiteLLM's `atext_completion` takes by
#: name (less `model`); `seed` and newer fields go in `extra_body`.
COMPLETION_FIELDS = frozenset(
    {
        "best_of",
        "echo",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "max_tokens",
        "n",
        "presence_penalty",
        "prompt",
        "stop",
        "stream",
        "stream_options",
        "suffix",
        "temperature",
        "top_p",
        "user",
    }
)

#: Embedding fields LiteLLM translates (CreateEmbeddingRequest, less model).
EMBEDDING_FIELDS = frozenset({"input", "dimensions", "encoding_format", "user"})

#: Image fields LiteLLM translates for every provider; the rest of
#: CreateImageRequest (response_format, style, background...) goes in extra_body,
#: which LiteLLM's Azure image call would otherwise refuse.
IMAGE_FIELDS = frozenset({"prompt", "n", "size", "quality", "user"})

#: CreateSpeechRequest's fields, less model.
SPEECH_FIELDS = frozenset({"input", "voice", "instructions", "response_format", "speed", "stream_format"})

#: CreateResponse's properties in OpenAI's API schema, less `model`.
RESPONSES_FIELDS = frozenset(
    {
        "background",
        "context_management",
        "conversation",
        "include",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "moderation",
        "parallel_tool_calls",
        "previous_response_id",
        "prompt",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
    }
)

#: Transcription form fields LiteLLM sends on (CreateTranscriptionRequest's, less model).
TRANSCRIPTION_FIELDS = frozenset(
    {
        "file",
        "language",
        "prompt",
        "temperature",
        "response_format",
        "timestamp_granularities",
        "chunking_strategy",
        "include",
    }
)
#: Translation form fields sent on (CreateTranslationRequest's, less model).
TRANSLATION_FIELDS = frozenset({"file", "prompt", "temperature", "response_format"})


def litellm_arguments(body: dict[str, Any], known_fields: frozenset[str]) -> dict[str, Any]:
    """LiteLLM keyword arguments for a request body (its `model` excluded)."""
    arguments: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in body.items():
        if name == "model":
            continue
        if name in known_fields:
            arguments[name] = value
        else:
            extra[name] = value
    if extra:
        arguments["extra_body"] = extra
    return arguments


def maybe_streamed(operation: Operation, body: dict[str, Any], known_fields: frozenset[str]) -> Request:
    """The request for a checked body, and for a stream one that always asks for the usage
    chunk, to meter it; the caller gets it only if asked (`stream_options.include_usage`)."""
    arguments = litellm_arguments(body, known_fields)
    if not body.get("stream"):
        return Request(operation, body, arguments)
    caller_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    stream_options = {"stream_options": (body.get("stream_options") or {}) | {"include_usage": True}}
    return Request(operation, body | stream_options, arguments | stream_options, caller_wants_usage, stream=True)
