"""Checks on what callers send, so their mistakes are 400s naming the field
instead of failures deep inside LiteLLM or upstream.

`parse_json` turns a body into JSON values the rest of the gateway can pass on
safely: finite numbers only, no lone surrogates, a bounded depth. The field
checks below are OpenAI's documented shapes and limits; a field the gateway
does not know is passed on unchecked.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from typing import Any

from .errors import InvalidRequest

#: Deeper JSON than any OpenAI request needs; deeper still would exhaust Python's recursion limit.
MAX_JSON_DEPTH = 64
#: Larger integers mean nothing to any provider (and some reject them with a 500).
MAX_INTEGER = 2**31 - 1
#: OpenAI's most choices per chat completion (and per legacy completion).
MAX_CHOICES = 128

_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
#: Content part types each role may send (OpenAI's ChatCompletionRequest*MessageContentPart).
PART_TYPES: dict[str, tuple[str, ...]] = {
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
    "function": ("text",),
}
IMAGE_URL_SCHEMES = ("https://", "data:")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
#: Tool types whose fields the gateway checks; other types (a provider's own,
#: such as Gemini's `googleSearch`) are passed on as they are.
NAMED_TOOL_TYPES = ("function", "custom")


def _reject_constant(name: str) -> float:
    raise InvalidRequest(f"The request body is not valid JSON: {name} is not a JSON number.")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidRequest(f"The request body is not valid JSON: the number {text[:40]} is out of range.")
    return value


def parse_json(raw: bytes) -> Any:
    """`raw` as JSON, or a 400 saying what is wrong with it."""
    if not raw.strip():
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        value = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidRequest(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    check_tree(value, surrogates=_ESCAPED_SURROGATE.search(raw) is not None)
    return value


def check_tree(value: Any, *, surrogates: bool = True) -> None:
    """A 400 for JSON nested deeper than `MAX_JSON_DEPTH`, or (when asked) a
    string holding a lone surrogate, which no provider can be sent."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, path = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidRequest(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.", param=path or None)
        if isinstance(item, dict):
            for key, child in item.items():
                if surrogates and _SURROGATE.search(key):
                    raise InvalidRequest("A field name holds a lone surrogate (invalid Unicode).", param=path or None)
                stack.append((child, depth + 1, f"{path}.{key}" if path else key))
        elif isinstance(item, list):
            stack.extend((child, depth + 1, f"{path}[{index}]") for index, child in enumerate(item))
        elif surrogates and isinstance(item, str) and _SURROGATE.search(item):
            raise InvalidRequest(f"'{path}' holds a lone surrogate (invalid Unicode).", param=path or None)


# Field checks: each raises a 400 naming the field, and does nothing for an absent (or null) field.


def integer(body: dict[str, Any], name: str, low: int = 0, high: int = MAX_INTEGER) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be an integer from {low} to {high}; got {_shown(value)}.", param=name)


def number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be a number from {low:g} to {high:g}; got {_shown(value)}.", param=name)


def kind(body: dict[str, Any], name: str, expected: type | tuple[type, ...], described: str) -> None:
    value = body.get(name)
    if value is not None and (
        not isinstance(value, expected) or (isinstance(value, bool) and bool not in _types(expected))
    ):
        raise InvalidRequest(f"'{name}' must be {described}.", param=name)


def text_length(body: dict[str, Any], name: str, most: int) -> None:
    value = body.get(name)
    if isinstance(value, str) and len(value) > most:
        raise InvalidRequest(f"'{name}' must be at most {most} characters; got {len(value)}.", param=name)


def list_length(body: dict[str, Any], name: str, most: int) -> None:
    value = body.get(name)
    if isinstance(value, list) and len(value) > most:
        raise InvalidRequest(f"'{name}' may hold at most {most} items; got {len(value)}.", param=name)


def _types(expected: type | tuple[type, ...]) -> tuple[type, ...]:
    return expected if isinstance(expected, tuple) else (expected,)


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def response_format(body: dict[str, Any]) -> None:
    value = body.get("response_format")
    if value is None:
        return
    if not isinstance(value, dict) or value.get("type") not in RESPONSE_FORMATS:
        raise InvalidRequest(
            f"'response_format' must be an object whose 'type' is one of: {', '.join(RESPONSE_FORMATS)}.",
            param="response_format",
        )
    if value["type"] == "json_schema":
        schema = value.get("json_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str) or not schema["name"]:
            raise InvalidRequest(
                "'response_format.json_schema' must be an object with a non-empty string 'name'.",
                param="response_format.json_schema",
            )
        if schema.get("schema") is not None and not isinstance(schema["schema"], dict):
            raise InvalidRequest(
                "'response_format.json_schema.schema' must be an object.", param="response_format.json_schema.schema"
            )


def messages(value: Any) -> None:
    """Chat messages: roles, content shapes and content part types."""
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'messages' is required and must be a non-empty array.", param="messages")
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"'{where}' must be an object with a string 'role'.", param=where)
        role = message.get("role")
        if not isinstance(role, str):
            raise InvalidRequest(f"'{where}' must be an object with a string 'role'.", param=where)
        if role not in ROLES:
            raise InvalidRequest(
                f"'{where}.role' must be one of: {', '.join(ROLES)}; got {_shown(role)}.", param=f"{where}.role"
            )
        _content(message, role, where)
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise InvalidRequest(
                f"'{where}.tool_call_id' is required for a tool message.", param=f"{where}.tool_call_id"
            )
        if message.get("name") is not None and not isinstance(message["name"], str):
            raise InvalidRequest(f"'{where}.name' must be a string.", param=f"{where}.name")
        tool_calls = message.get("tool_calls")
        if tool_calls is not None and (
            role != "assistant" or not isinstance(tool_calls, list) or not all(isinstance(c, dict) for c in tool_calls)
        ):
            raise InvalidRequest(
                f"'{where}.tool_calls' must be an array of objects on an assistant message.",
                param=f"{where}.tool_calls",
            )


def _content(message: dict[str, Any], role: str, where: str) -> None:
    content = message.get("content")
    if content is None:
        if role in ("assistant", "function"):  # an assistant's tool calls, a function's empty result
            return
        raise InvalidRequest(f"'{where}.content' is required for a {role} message.", param=f"{where}.content")
    if isinstance(content, str):
        return
    if not isinstance(content, list) or not content:
        raise InvalidRequest(
            f"'{where}.content' must be a string or a non-empty array of content parts.", param=f"{where}.content"
        )
    allowed = PART_TYPES[role]
    for index, part in enumerate(content):
        _part(part, allowed, f"{where}.content[{index}]")


def _part(part: Any, allowed: Collection[str], where: str) -> None:
    kind_ = part.get("type") if isinstance(part, dict) else None
    if kind_ not in allowed:
        raise InvalidRequest(
            f"'{where}' must be a content part whose 'type' is one of: {', '.join(allowed)}.", param=f"{where}.type"
        )
    if kind_ in ("text", "refusal") and not isinstance(part.get(kind_), str):
        raise InvalidRequest(f"'{where}.{kind_}' must be a string.", param=f"{where}.{kind_}")
    if kind_ == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str) or not url.lower().startswith(IMAGE_URL_SCHEMES):
            raise InvalidRequest(
                f"'{where}.image_url.url' must be an https:// URL or a data: URL.", param=f"{where}.image_url.url"
            )
    if kind_ in ("input_audio", "file") and not isinstance(part.get(kind_), dict):
        raise InvalidRequest(f"'{where}.{kind_}' must be an object.", param=f"{where}.{kind_}")


def tools(value: Any, *, nested: bool) -> None:
    """A request's `tools`: an array of objects, each function or custom tool
    with a name. Chat completions nest a tool's fields under its type
    (`{"type": "function", "function": {"name": ...}}`, `nested`); the
    Responses API has them flat (`{"type": "function", "name": ...}`)."""
    if value is None:
        return
    if not isinstance(value, list):
        raise InvalidRequest("'tools' must be an array.", param="tools")
    for index, tool in enumerate(value):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise InvalidRequest(f"'{where}' must be a tool object.", param=where)
        tool_type = tool.get("type")
        if tool_type not in NAMED_TOOL_TYPES:
            continue
        fields, at = (tool.get(tool_type), f"{where}.{tool_type}") if nested else (tool, where)
        if not isinstance(fields, dict):
            raise InvalidRequest(
                f"'{at}' is required for a {tool_type} tool: an object with at least a 'name'.", param=at
            )
        name = fields.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"'{at}.name' is required and must be a non-empty string.", param=f"{at}.name")
        parameters = fields.get("parameters")
        if tool_type == "function" and parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequest(f"'{at}.parameters' must be a JSON Schema object.", param=f"{at}.parameters")


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' is required and must be a non-empty string.", param="model")
    return model


def stop(body: dict[str, Any]) -> None:
    given = body.get("stop")
    if (
        given is not None
        and not isinstance(given, str)
        and not (isinstance(given, list) and len(given) <= 4 and all(isinstance(item, str) for item in given))
    ):
        raise InvalidRequest("'stop' must be a string or an array of up to 4 strings.", param="stop")


def chat_completion(body: dict[str, Any]) -> None:
    """A chat completion's body, checked for what the gateway relies on and what would
    otherwise fail inside LiteLLM or upstream."""
    require_model(body)
    messages(body.get("messages"))
    kind(body, "stream", bool, "a boolean")
    kind(body, "stream_options", dict, "an object")
    tools(body.get("tools"), nested=True)
    integer(body, "n", 1, MAX_CHOICES)
    integer(body, "max_tokens", 1)
    integer(body, "max_completion_tokens", 1)
    integer(body, "top_logprobs", 0, 20)
    integer(body, "seed", -(2**63), 2**63 - 1)
    number(body, "temperature", 0, 2)
    number(body, "top_p", 0, 1)
    number(body, "presence_penalty", -2, 2)
    number(body, "frequency_penalty", -2, 2)
    kind(body, "logprobs", bool, "a boolean")
    kind(body, "logit_bias", dict, "an object")
    response_format(body)
    stop(body)
