"""The Mock model's schema instances: each one valid for its schema (checked with jsonschema)."""

import jsonschema
import pytest

from shared.providers.schema_instance import instance

NODE = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}, {}),
        ({"type": "integer", "minimum": 3, "maximum": 9}, 3),
        ({"type": "integer", "exclusiveMinimum": 3}, 4),
        ({"type": "integer", "maximum": -2}, -2),
        ({"type": "integer", "exclusiveMaximum": 0, "multipleOf": 5}, -5),
        ({"type": "number", "minimum": 0.5, "multipleOf": 0.25}, 0.5),
        ({"type": "number", "exclusiveMinimum": 0.5}, 1.5),
        ({"type": "string", "minLength": 3}, "aaa"),
        ({"type": "string", "format": "date-time"}, "1970-01-01T00:00:00Z"),
        ({"type": ["null", "boolean"]}, False),
        ({"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2}, [1, 1]),
        ({"type": "array", "prefixItems": [{"const": "x"}, {"type": "boolean"}]}, ["x", False]),
        ({"enum": ["red", "green"]}, "red"),
        ({"anyOf": [{"type": "null"}, {"type": "string"}]}, None),
        ({"allOf": [{"required": ["a"], "properties": {"a": {"const": 1}}}, {"required": ["b"]}]}, {"a": 1, "b": None}),
        (
            {
                "$defs": {"node": NODE},
                "type": "object",
                "properties": {"n": {"$ref": "#/$defs/node"}},
                "required": ["n"],
            },
            {"n": {"name": ""}},
        ),
        ({"type": "object", "required": ["k"], "additionalProperties": {"type": "integer"}}, {"k": 0}),
    ],
)
def test_an_instance_is_the_smallest_value_the_schema_accepts(schema, expected):
    value = instance(schema)

    assert value == expected
    jsonschema.validate(value, schema)


def test_a_schema_that_requires_itself_ends():
    schema = {
        "$defs": {"loop": {"type": "object", "properties": {"next": {"$ref": "#/$defs/loop"}}, "required": ["next"]}},
        "$ref": "#/$defs/loop",
    }
    value = instance(schema)
    depth = 0
    while isinstance(value, dict):
        value, depth = value["next"], depth + 1
    assert value is None and depth > 1
