"""Request bodies: what the gateway checks, and how the rest reaches LiteLLM.

Only what the gateway itself needs is validated; every other field is passed
on. Fields of OpenAI's published request schema go to LiteLLM as arguments
(it translates them per provider); any other field goes in `extra_body`, sent
upstream as it came. Nothing a caller sends can become a LiteLLM-only
argument (an `api_base`, a credential, a mock), so a caller cannot redirect
the gateway's credentials.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidRequest

#: CreateChatCompletionRequest's properties in OpenAI's API schema, less `model`.
CHAT_COMPLETION_FIELDS = frozenset(
    {
        "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities",
        "moderation", "n", "parallel_tool_calls", "prediction", "presence_penalty",
        "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
        "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier",
        "stop", "store", "stream", "stream_options", "temperature", "tool_choice", "tools",
        "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
    }
)  # fmt: skip


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


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' is required and must be a non-empty string.", param="model")
    return model


def _optional(body: dict[str, Any], name: str, kind: type | tuple[type, ...], described: str) -> None:
    value = body.get(name)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool) and kind is not bool):
        raise InvalidRequest(f"'{name}' must be {described}.", param=name)


def chat_completion(body: dict[str, Any]) -> dict[str, Any]:
    """The body, checked for what the gateway relies on."""
    require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' is required and must be a non-empty array.", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"'messages[{index}]' must be an object with a string 'role'.",
                param=f"messages[{index}]",
            )
    _optional(body, "stream", bool, "a boolean")
    _optional(body, "stream_options", dict, "an object")
    _optional(body, "n", int, "an integer")
    _optional(body, "tools", list, "an array")
    return body
