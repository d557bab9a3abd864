"""A small valid instance of a JSON Schema, for the Mock model's tool-call
arguments and structured outputs. Written for the gateway (no library in its
requirements generates instances).

It covers what function parameters and structured-output schemas use
(OpenAI's strict subset and what pydantic generates): `type` (one or a list),
`properties` and `required` (only required properties are given), `items`,
`prefixItems` and `minItems`, `enum` and `const` (the first value), `anyOf`
and `oneOf` (the first branch), `allOf` (the branches' objects merged),
`$ref` to the same document (`#/$defs/...`, `#/definitions/...`), numbers'
bounds and `multipleOf`, strings' `minLength` and common `format`s. A string
`pattern` is not read: a schema that needs one gets a plain string.
"""

from __future__ import annotations

import math
from typing import Any

#: How deep references may nest before a value gives up (a schema that requires itself).
MAX_DEPTH = 32

#: A valid string for each common `format`.
FORMATTED_STRINGS = {
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00Z",
    "duration": "P0D",
    "email": "user@example.com",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-0000-0000-000000000000",
}


def instance(schema: Any) -> Any:
    """A small value that `schema` accepts."""
    return _value(schema, schema, 0)


def _value(schema: Any, root: Any, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return None
    if "$ref" in schema:
        return _value(_resolve(schema["$ref"], root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combined in ("anyOf", "oneOf"):
        if schema.get(combined):
            return _value(schema[combined][0], root, depth + 1)
    if schema.get("allOf"):
        parts = [_value(part, root, depth + 1) for part in schema["allOf"]]
        if all(isinstance(part, dict) for part in parts):
            return {key: item for part in parts for key, item in part.items()}
        return parts[0]
    kind = _kind(schema)
    if kind == "object":
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        return {
            name: _value(properties.get(name, extra if isinstance(extra, dict) else {}), root, depth + 1)
            for name in schema.get("required", [])
        }
    if kind == "array":
        given = [_value(item, root, depth + 1) for item in schema.get("prefixItems", [])]
        missing = max(0, int(schema.get("minItems", 0)) - len(given))
        return given + [_value(schema.get("items", {}), root, depth + 1) for _ in range(missing)]
    if kind == "string":
        text = FORMATTED_STRINGS.get(schema.get("format", ""), "")
        return text + "a" * max(0, int(schema.get("minLength", 0)) - len(text))
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return False
    return None


def _kind(schema: dict[str, Any]) -> str | None:
    """The schema's type (the first that is not null, of a list), or the one its keywords imply."""
    declared = schema.get("type")
    if isinstance(declared, list):
        declared = next((kind for kind in declared if kind != "null"), None)
    if isinstance(declared, str):
        return declared
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return None


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    """Zero, or the nearest value the bounds and `multipleOf` allow."""
    step = schema.get("multipleOf") or (1 if integer else None)
    low, high = schema.get("minimum"), schema.get("maximum")
    above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    value: float = 0
    if low is not None and value < low:
        value = low
    if above is not None and value <= above:
        value = above + (step or 1)
    if high is not None and value > high:
        value = high
    if below is not None and value >= below:
        value = below - (step or 1)
    if step:
        value = math.ceil(value / step) * step
        if (high is not None and value > high) or (below is not None and value >= below):
            value -= step
    return int(value) if integer else value


def _resolve(reference: Any, root: Any) -> Any:
    """The schema a `#/...` reference points to in `root` (None for any other reference)."""
    if not isinstance(reference, str) or not reference.startswith("#"):
        return None
    target = root
    for token in filter(None, reference[1:].split("/")):
        token = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or token not in target:
            return None
        target = target[token]
    return target
