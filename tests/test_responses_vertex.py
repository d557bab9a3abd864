"""The Responses API on Vertex AI models, over their chat completions, through the official openai client.

The fake Vertex AI answers in Gemini's and Anthropic's own wire formats; every
body and stream event the caller gets is checked against OpenAI's schema.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import FAMILIES, PNG_DATA_URL, assert_sent_the_image
from tests.openapi import assert_conforms
from tests.test_wire_format import sse

FUNCTION_TOOL = {
    "type": "function",
    "name": "lookup_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
FAMILIES_WITH_OWN_PATH = ["gemini", "claude"]


def raw(gateway, body):
    """The response body a caller gets, checked against OpenAI's `Response`."""
    response = httpx.post(f"{gateway.url}/v1/responses", json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert_conforms("Response", response.json(), f"{body['model']} response")
    return response.json()


def events(gateway, body):
    """The stream events a caller gets, each checked against OpenAI's `ResponseStreamEvent`."""
    received = sse(f"{gateway.url}/v1/responses", body | {"stream": True})
    assert (None, "[DONE]") not in received
    for name, data in received:
        assert name == data["type"]
        assert_conforms("ResponseStreamEvent", data, f"event {name}")
    assert [data["sequence_number"] for _, data in received] == list(range(len(received)))
    return [data for _, data in received]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_answers_the_responses_api(vertex_client, vertex_gateway, family):
    response = vertex_client.responses.create(model=family, input="hello there", max_output_tokens=100)
    assert response.output_text == "echo: hello there"
    assert response.model == family and response.status == "completed"
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (2, 3, 5)
    raw(vertex_gateway, {"model": family, "input": "hello there", "max_output_tokens": 100})


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_streams_the_responses_api(vertex_client, vertex_gateway, family):
    streamed = list(
        vertex_client.responses.create(model=family, input="hello there", max_output_tokens=100, stream=True)
    )
    kinds = [event.type for event in streamed]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    text = "".join(event.delta for event in streamed if event.type == "response.output_text.delta")
    assert text == "echo: hello there"
    final = streamed[-1].response
    assert final.output_text == "echo: hello there" and final.model == family
    assert final.usage.output_tokens == 3
    assert {event.response.id for event in streamed if hasattr(event, "response")} == {final.id}
    events(vertex_gateway, {"model": family, "input": "hello there", "max_output_tokens": 100})


@pytest.mark.parametrize("family", FAMILIES_WITH_OWN_PATH)
def test_instructions_and_parameters_reach_the_model(vertex_client, google, family):
    vertex_client.responses.create(
        model=family, input="hello there", instructions="be brief", max_output_tokens=40, temperature=0.25
    )
    (upstream,) = google[1].requests
    sent = upstream.json
    if family == "gemini":
        config = sent["generationConfig"]
        assert (config["max_output_tokens"], config["temperature"]) == (40, 0.25)
        assert sent["contents"][0]["parts"][0] == {"text": "be brief"}
    else:
        assert (sent["max_tokens"], sent["temperature"]) == (40, 0.25)
        assert sent["system"] == [{"type": "text", "text": "be brief"}]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("family", FAMILIES_WITH_OWN_PATH)
def test_a_function_call_and_its_output_make_a_tool_turn(vertex_client, vertex_gateway, family, stream):
    body = {"model": family, "input": "Paris", "tools": [FUNCTION_TOOL], "max_output_tokens": 100}
    if stream:
        streamed = events(vertex_gateway, body)
        kinds = [event["type"] for event in streamed]
        assert "response.function_call_arguments.delta" in kinds
        (done,) = [event for event in streamed if event["type"] == "response.function_call_arguments.done"]
        assert json.loads(done["arguments"]) == {"echo": "Paris"} and done["name"] == "lookup_weather"
        output = streamed[-1]["response"]["output"]
    else:
        output = raw(vertex_gateway, body)["output"]
    (call,) = [item for item in output if item["type"] == "function_call"]
    assert call["name"] == "lookup_weather" and json.loads(call["arguments"]) == {"echo": "Paris"}

    answered = vertex_client.responses.create(
        model=family,
        input=[
            {"role": "user", "content": "Paris"},
            {"type": "function_call", "call_id": call["call_id"], "name": call["name"], "arguments": call["arguments"]},
            {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny and 21C"},
        ],
        tools=[FUNCTION_TOOL],
        max_output_tokens=100,
    )
    assert answered.output_text == "echo: sunny and 21C"


@pytest.mark.parametrize("family", FAMILIES_WITH_OWN_PATH)
def test_an_image_input_reaches_the_model(vertex_client, google, vertex_gateway, family):
    content = [{"type": "input_text", "text": "describe"}, {"type": "input_image", "image_url": PNG_DATA_URL}]
    body = {"model": family, "input": [{"role": "user", "content": content}], "max_output_tokens": 20}
    response = vertex_client.responses.create(**body)
    assert response.usage.input_tokens == 2  # one text word + one image part
    assert_sent_the_image(google[1].requests[0].json, family)
    raw(vertex_gateway, body)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
        ),
        ({"background": True}, "background"),
    ],
)
def test_what_chat_completions_cannot_carry_is_refused_by_name(vertex_gateway, google, body, param):
    google[1].clear()
    sent = {"model": "gemini", "input": "hello"} | body
    response = httpx.post(f"{vertex_gateway.url}/v1/responses", json=sent, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert_conforms("ErrorResponse", response.json())
    assert google[1].requests == []


def test_a_provider_refusal_and_a_rate_limit_keep_their_status(vertex_gateway):
    for model, status in (("gemini-invalid", 400), ("gemini-rate-limited", 429)):
        for stream in (False, True):
            body = {"model": model, "input": "hello", "stream": stream}
            response = httpx.post(f"{vertex_gateway.url}/v1/responses", json=body, timeout=30)
            assert response.status_code == status, response.text


def test_responses_are_metered_as_responses(vertex_gateway):
    vertex_client = vertex_gateway.client("local", request_id="vertex-responses-metered")
    vertex_client.responses.create(model="claude", input="count me please", max_output_tokens=50)
    record = vertex_gateway.usage_record("vertex-responses-metered")
    assert (record["operation"], record["model"], record["status"]) == ("Responses", "claude", 200)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (3, 4)
    streamed = vertex_gateway.client("local", request_id="vertex-responses-metered-stream")
    list(streamed.responses.create(model="gemini", input="count me please", stream=True))
    record = vertex_gateway.usage_record("vertex-responses-metered-stream")
    assert (record["operation"], record["stream"], record["completion_tokens"]) == ("Responses", True, 4)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_azure_responses_model_falls_back_to_gemini(vertex_client, fake_azure, google, stream):
    fake_azure.clear()
    if stream:
        with vertex_client.responses.stream(model="azure-responses-to-gemini", input="hello there") as events:
            response = events.get_final_response()
    else:
        response = vertex_client.responses.create(model="azure-responses-to-gemini", input="hello there")
    assert response.output_text == "echo: hello there" and response.model == "gemini"
    assert [request.extra["deployment"] for request in fake_azure.requests] == ["broken"]
    assert len(google[1].requests) == 1


def test_the_sdk_parses_a_streamed_function_call(vertex_client):
    with vertex_client.responses.stream(model="claude", input="Rome", tools=[FUNCTION_TOOL], max_output_tokens=50) as s:
        final = s.get_final_response()
    (call,) = final.output
    assert isinstance(call, openai.types.responses.ResponseFunctionToolCall)
    assert json.loads(call.arguments) == {"echo": "Rome"}
