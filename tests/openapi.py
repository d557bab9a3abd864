"""OpenAI's OpenAPI document as JSON Schema validators, for the conformance tests.

The document is the project's own copy, `tests/spec/openai-openapi.json`,
with OpenAI's licence and the upstream commit it was taken from beside it.
It is OpenAPI 3.1, whose schemas are JSON Schema 2020-12,
except that about a hundred of them still say `nullable: true` (OpenAPI 3.0's
spelling) where OpenAI sends `null`, such as a stream chunk's
`finish_reason`: those are read as "or null". So is a legacy completion
choice's `finish_reason`, which the document does not mark although OpenAI
streams it as `null` until the choice finishes (`CreateCompletionResponse`
is the shape of the stream's chunks too). The document is loaded and its
validators compiled once per test session.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parent / "spec" / "openai-openapi.json"
SPEC_URI = "urn:openai:openapi"


def _with_nullable(node: Any) -> Any:
    """`node` with every `nullable: true` schema rewritten as `anyOf: [schema, null]`."""
    if isinstance(node, list):
        return [_with_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _with_nullable(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


#: Fields OpenAI sends as `null` that the document does not mark nullable: (schema, path to the property).
SENT_AS_NULL = (("CreateCompletionResponse", ("properties", "choices", "items", "properties", "finish_reason")),)


def _with_sent_nulls(spec: dict[str, Any]) -> dict[str, Any]:
    for schema, path in SENT_AS_NULL:
        node = spec["components"]["schemas"][schema]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = {"anyOf": [node[path[-1]], {"type": "null"}]}
    return spec


@functools.cache
def _registry() -> Registry:
    if not SPEC_PATH.exists():
        raise FileNotFoundError(f"OpenAI's OpenAPI document is expected at {SPEC_PATH}")
    spec = _with_sent_nulls(_with_nullable(json.loads(SPEC_PATH.read_text(encoding="utf-8"))))
    return Registry().with_resource(SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012))


@functools.cache
def validator(schema_name: str) -> Draft202012Validator:
    """A validator for `#/components/schemas/<schema_name>`, `$ref`s resolved in the document."""
    schemas = _registry().contents(SPEC_URI)["components"]["schemas"]
    if schema_name not in schemas:
        raise KeyError(f"OpenAI's schema has no component named {schema_name!r}")
    return Draft202012Validator({"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"}, registry=_registry())


def _names_another_kind(causes: list[ValidationError]) -> bool:
    """Whether a branch's errors say the value's `type` is not the branch's kind."""
    return any(list(cause.relative_path) == ["type"] and cause.validator in ("enum", "const") for cause in causes)


def _describe(error: ValidationError) -> str:
    """An error as `<field path>: <message>`. For anyOf/oneOf, the cause is looked
    for in the branch meant for the value: the one whose `type` discriminator
    matched, else the one with the fewest errors."""
    while error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for cause in error.context:
            branches.setdefault(cause.relative_schema_path[0], []).append(cause)
        error = min(branches.values(), key=lambda causes: (_names_another_kind(causes), len(causes)))[0]
    message = error.message if len(error.message) < 300 else error.message[:300] + "..."
    return f"{error.json_path}: {message}"


def problems(schema_name: str, instance: Any) -> list[str]:
    """Every way `instance` breaks OpenAI's `schema_name`, each naming the field."""
    return sorted({_describe(error) for error in validator(schema_name).iter_errors(instance)})


def assert_conforms(schema_name: str, instance: Any, what: str = "") -> None:
    found = problems(schema_name, instance)
    if found:
        label = f"{what} " if what else ""
        details = "\n  ".join(found)
        raise AssertionError(
            f"{label}does not match OpenAI's {schema_name}:\n  {details}\n{json.dumps(instance)[:2000]}"
        )
