"""The shaping rules of shared/wire.py, on LiteLLM-like results (no I/O)."""

from typing import Any

from shared import wire
from tests.openapi import assert_conforms, problems


class Result:
    """Stands in for a LiteLLM pydantic result: what matters is its `model_dump`."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload

    def model_dump(self, **options: Any) -> dict[str, Any]:
        return self.payload


def chunk(chunk_id: str, choices: list[dict[str, Any]], **fields: Any) -> Result:
    return Result(
        {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": 0 if not chunk_id else 1700000000,
            "model": "upstream-name",
            "choices": choices,
            "system_fingerprint": None,
            **fields,
        }
    )


def delta(content: str | None, finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "index": 0,
        "finish_reason": finish_reason,
        "logprobs": None,
        "delta": {"content": content, "role": None, "tool_calls": None, "function_call": None},
    }


USAGE = {
    "prompt_tokens": 2,
    "completion_tokens": 3,
    "total_tokens": 5,
    "cost": 0.1,
    "prompt_tokens_details": {"cached_tokens": None, "text_tokens": 2},
    "completion_tokens_details": None,
}


def stream(caller_wants_usage: bool) -> list[dict[str, Any]]:
    shaper = wire.ChatStream("catalog-id", caller_wants_usage)
    results = [
        chunk("", []),  # Azure's prompt-filter chunk, as LiteLLM hands it on
        chunk("chatcmpl-1", [delta("Hel")]),
        chunk("chatcmpl-other", [delta("lo")]),
        chunk("chatcmpl-1", [delta(None, "stop")]),
        chunk("chatcmpl-1", [], usage=USAGE),
    ]
    events = [shaper.event(result) for result in results]
    return [event[1] for event in events if event is not None]


def test_a_stream_has_one_id_one_created_and_no_empty_chunk():
    chunks = stream(caller_wants_usage=True)
    assert [c["id"] for c in chunks] == ["chatcmpl-1"] * 4
    assert {c["created"] for c in chunks} == {1700000000}
    assert {c["model"] for c in chunks} == {"catalog-id"}
    for shaped in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", shaped)


def test_the_usage_chunk_only_for_a_caller_who_asked():
    asked = stream(caller_wants_usage=True)
    assert asked[-1]["choices"] == [] and asked[-1]["usage"] == {
        "prompt_tokens": 2,
        "completion_tokens": 3,
        "total_tokens": 5,
        "prompt_tokens_details": {"text_tokens": 2},
    }
    assert [c["usage"] for c in asked[:-1]] == [None] * 3
    unasked = stream(caller_wants_usage=False)
    assert len(unasked) == 3 and all("usage" not in c and c["choices"] for c in unasked)


def test_chunks_carry_a_nullable_finish_reason_and_no_null_where_a_type_is_wanted():
    first = stream(caller_wants_usage=False)[0]["choices"][0]
    assert first["finish_reason"] is None and first["logprobs"] is None
    assert first["delta"] == {"content": "Hel"}


def test_a_completion_keeps_provider_fields_and_fills_required_nullables():
    logprobs = {"content": [{"token": "a", "logprob": -0.1, "bytes": None, "top_logprobs": []}], "refusal": None}
    completion = wire.chat_completion(
        Result(
            {
                "id": "chatcmpl-2",
                "object": "chat.completion",
                "created": 1700000000,
                "model": "gpt-4o-2024-08-06",
                "system_fingerprint": "fp_1",
                "prompt_filter_results": [{"prompt_index": 0}],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "logprobs": logprobs,
                        "message": {"role": "assistant", "content": "a", "tool_calls": None, "function_call": None},
                        "provider_specific_fields": {"content_filter_results": {"hate": {"filtered": False}}},
                    },
                    {"index": 1, "finish_reason": "stop", "message": {"role": "assistant", "content": "b"}},
                ],
                "usage": USAGE,
            }
        ),
        "catalog-id",
    )
    assert_conforms("CreateChatCompletionResponse", completion)
    first, second = completion["choices"]
    assert first["content_filter_results"] == {"hate": {"filtered": False}}
    assert first["logprobs"] == logprobs  # as sent, nulls included
    assert first["message"] == {"role": "assistant", "content": "a", "refusal": None}
    assert second["logprobs"] is None
    assert completion["prompt_filter_results"] == [{"prompt_index": 0}]
    assert completion["system_fingerprint"] == "fp_1" and completion["model"] == "catalog-id"
    assert "cost" not in completion["usage"]


def test_a_response_gets_the_fields_openai_requires():
    response = wire.response(
        Result(
            {
                "id": "resp_1",
                "object": "response",
                "created_at": 1700000000,
                "status": "completed",
                "model": "x",
                "output": [],
                "error": None,
                "usage": {
                    "input_tokens": 1,
                    "output_tokens": 2,
                    "total_tokens": 3,
                    "cost": 0.2,
                    "input_tokens_details": None,
                    "output_tokens_details": None,
                },
            }
        ),
        "catalog-id",
    )
    assert_conforms("Response", response)
    assert response["error"] is None and response["tools"] == [] and response["model"] == "catalog-id"


def test_a_schema_failure_names_the_field():
    found = problems(
        "CreateChatCompletionResponse",
        {
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "a", "tool_calls": None},
                }
            ],
        },
    )
    assert "$.choices[0].message.tool_calls: None is not of type 'array'" in found
    assert "$.choices[0]: 'logprobs' is a required property" in found
    assert "$.choices[0].message: 'refusal' is a required property" in found
