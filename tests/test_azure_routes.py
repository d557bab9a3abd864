"""Code written for Azure OpenAI (`openai.AzureOpenAI`, and `OpenAI` on Azure's v1 paths)
served unchanged, with the same project rules; and the catalog's api-version upstream."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import API_VERSION, EVERY_OPERATION, azure_entry, gateway_env
from tests.fakes.azure_openai import speech_bytes
from tests.openapi import assert_conforms
from tests.support import GatewayProcess, running_gateway, wav_bytes, write_catalog, write_projects

KEY_A = "sk-gw-azure-team-a-0001"
KEY_B = "sk-gw-azure-team-b-0002"
CLIENT_API_VERSION = "2024-10-21"
RESPONSES_API_VERSION = "2025-04-01-preview"
USER = [{"role": "user", "content": "hello azure clients"}]


@pytest.fixture(scope="module")
def azure_gateway(fake_azure, tmp_path_factory):
    """A gateway with project keys: `team-a-only` is private to team-a."""
    directory = tmp_path_factory.mktemp("azure-routes")
    projects = write_projects(directory / "projects.json", {KEY_A: "team-a", KEY_B: "team-b"})
    preview = {"endpoint": fake_azure.url, "api_version": RESPONSES_API_VERSION, "api_key": "$KEY_B"}
    catalog = write_catalog(
        directory / "models.json",
        [
            azure_entry("every-op", "dep-a", fake_azure.url, operations=EVERY_OPERATION),
            azure_entry("team-a-only", "dep-a", fake_azure.url, private=True, projects=["team-a"]),
            azure_entry("responses-preview", "dep-b", fake_azure.url, operations=["Responses"], parameters=preview),
            azure_entry("embed-only", "dep-b", fake_azure.url, operations=["embeddings"]),
        ],
    )
    env = gateway_env(ALLOW_ANONYMOUS="false", MODELS_FILE=str(catalog), PROJECTS_FILE=str(projects))
    with running_gateway(directory, env) as process:
        yield process


def azure_client(gateway: GatewayProcess, key: str = KEY_A, **options) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=gateway.url, api_version=CLIENT_API_VERSION, api_key=key, max_retries=0, **options
    )


# Every operation through openai.AzureOpenAI


def test_chat_plain_and_streamed(azure_gateway, fake_azure):
    client = azure_client(azure_gateway)
    completion = client.chat.completions.create(model="every-op", messages=USER)
    assert completion.choices[0].message.content == "echo: hello azure clients"
    assert completion.model == "every-op"

    chunks = list(
        client.chat.completions.create(
            model="every-op", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello azure clients"
    assert chunks[-1].usage.total_tokens == 7
    assert len({chunk.id for chunk in chunks}) == 1
    assert [request.path for request in fake_azure.requests] == ["/openai/deployments/dep-a/chat/completions"] * 2


def test_the_raw_answers_conform_to_openais_schema(azure_gateway):
    url = f"{azure_gateway.url}/openai/deployments/every-op/chat/completions?api-version={CLIENT_API_VERSION}"
    body = {"messages": USER}
    plain = httpx.post(url, json=body, headers={"api-key": KEY_A}, timeout=30)
    assert plain.status_code == 200, plain.text
    assert_conforms("CreateChatCompletionResponse", plain.json())
    with httpx.stream("POST", url, json=body | {"stream": True}, headers={"api-key": KEY_A}, timeout=30) as streamed:
        lines = [line.removeprefix("data: ") for line in streamed.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    for line in lines[:-1]:
        assert_conforms("CreateChatCompletionStreamResponse", json.loads(line))


def test_the_deployment_is_a_client_wide_setting_too(azure_gateway):
    client = azure_client(azure_gateway, azure_deployment="every-op")
    completion = client.chat.completions.create(model="ignored-by-azure", messages=USER)
    assert completion.model == "every-op"


def test_embeddings_images_speech_transcriptions(azure_gateway, fake_azure):
    client = azure_client(azure_gateway)
    vectors = client.embeddings.create(model="every-op", input=["one", "two"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 8

    images = client.images.generate(model="every-op", prompt="a red fox", response_format="b64_json")
    assert images.data[0].b64_json

    speech = client.audio.speech.create(model="every-op", voice="alloy", input="say this")
    assert speech.content == speech_bytes("mp3", "say this")

    audio = wav_bytes()
    text = client.audio.transcriptions.create(model="every-op", file=("clip.wav", audio))
    assert text.text == f"transcribed {len(audio)} bytes"

    paths = [request.path for request in fake_azure.requests]
    assert paths == [
        f"/openai/deployments/dep-a/{operation}"
        for operation in ("embeddings", "images/generations", "audio/speech", "audio/transcriptions")
    ]


def test_responses_plain_and_streamed(azure_gateway):
    client = azure_client(azure_gateway)
    response = client.responses.create(model="every-op", input="hello responses")
    assert response.output_text == "echo: hello responses" and response.model == "every-op"

    events = list(client.responses.create(model="every-op", input="stream it", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "echo: stream it"


def test_azure_v1_paths_are_the_openai_operations(azure_gateway, fake_azure):
    client = openai.OpenAI(base_url=f"{azure_gateway.url}/openai/v1", api_key=KEY_A, max_retries=0)
    assert client.chat.completions.create(model="every-op", messages=USER).model == "every-op"
    chunks = list(client.chat.completions.create(model="every-op", messages=USER, stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert client.embeddings.create(model="every-op", input="x").data
    assert client.responses.create(model="every-op", input="hi").output_text == "echo: hi"
    assert client.images.generate(model="every-op", prompt="fox").data
    assert client.audio.speech.create(model="every-op", voice="alloy", input="x").content
    assert client.audio.transcriptions.create(model="every-op", file=("a.wav", wav_bytes())).text
    assert "every-op" in {model.id for model in client.models.list()}
    assert client.models.retrieve("every-op").id == "every-op"


def test_models_are_listed_on_the_azure_paths(azure_gateway):
    client = azure_client(azure_gateway)
    assert {"every-op", "team-a-only"} <= {model.id for model in client.models.list()}
    assert client.models.retrieve("every-op").owned_by == "azure"


# The same project rules


def test_a_private_model_of_another_project_is_not_found(azure_gateway, fake_azure):
    with pytest.raises(openai.NotFoundError) as caught:
        azure_client(azure_gateway, KEY_B).chat.completions.create(model="team-a-only", messages=USER)
    assert caught.value.code == "model_not_found" and caught.value.body["param"] == "model"
    assert_conforms("ErrorResponse", caught.value.response.json())
    assert "team-a-only" not in {model.id for model in azure_client(azure_gateway, KEY_B).models.list()}
    assert fake_azure.requests == []

    completion = azure_client(azure_gateway, KEY_A).chat.completions.create(model="team-a-only", messages=USER)
    assert completion.model == "team-a-only"


def test_api_key_and_bearer_both_identify_the_project(azure_gateway):
    bearer = openai.AzureOpenAI(
        azure_endpoint=azure_gateway.url, api_version=CLIENT_API_VERSION, azure_ad_token=KEY_A, max_retries=0
    )
    assert bearer.chat.completions.create(model="team-a-only", messages=USER).model == "team-a-only"

    url = f"{azure_gateway.url}/openai/deployments/every-op/chat/completions?api-version={CLIENT_API_VERSION}"
    for headers in ({}, {"api-key": "sk-gw-unknown"}):
        refused = httpx.post(url, json={"messages": USER}, headers=headers, timeout=30)
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        assert_conforms("ErrorResponse", refused.json())


def test_operations_and_errors_follow_the_catalog(azure_gateway):
    client = azure_client(azure_gateway)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="embed-only", messages=USER)
    assert caught.value.code == "unsupported_operation"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")
    with pytest.raises(openai.BadRequestError) as invalid:
        client.chat.completions.create(model="every-op", messages=[])
    assert invalid.value.body["param"] == "messages"


def test_the_path_names_the_model_and_any_api_version_is_accepted(azure_gateway):
    base = f"{azure_gateway.url}/openai/deployments/every-op/chat/completions"
    for query in ("?api-version=2099-01-01-preview", ""):
        body = {"model": "embed-only", "messages": USER}
        response = httpx.post(base + query, json=body, headers={"api-key": KEY_A}, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "every-op"


def test_usage_is_recorded_for_the_project(azure_gateway):
    client = azure_client(azure_gateway, default_headers={"x-request-id": "azure-route-usage"})
    client.embeddings.create(model="every-op", input="three words here")
    record = azure_gateway.usage_record("azure-route-usage")
    assert (record["project"], record["model"], record["operation"]) == ("team-a", "every-op", "embeddings")
    assert record["prompt_tokens"] == 3


# The catalog's api_version upstream, for every Azure operation


@pytest.mark.parametrize(
    ("operation", "call"),
    [
        ("chat/completions", lambda c: c.chat.completions.create(model="every-op", messages=USER)),
        ("chat/completions", lambda c: list(c.chat.completions.create(model="every-op", messages=USER, stream=True))),
        ("embeddings", lambda c: c.embeddings.create(model="every-op", input="x")),
        ("images/generations", lambda c: c.images.generate(model="every-op", prompt="x")),
        ("audio/speech", lambda c: c.audio.speech.create(model="every-op", voice="alloy", input="x")),
        (
            "audio/transcriptions",
            lambda c: c.audio.transcriptions.create(model="every-op", file=("a.wav", wav_bytes())),
        ),
    ],
    ids=["chat", "chat-stream", "embeddings", "images", "speech", "transcriptions"],
)
def test_the_catalogs_api_version_goes_upstream(azure_gateway, fake_azure, operation, call):
    client = openai.OpenAI(base_url=f"{azure_gateway.url}/v1", api_key=KEY_A, max_retries=0)
    call(client)
    (upstream,) = fake_azure.requests
    assert upstream.path == f"/openai/deployments/dep-a/{operation}"
    assert upstream.query["api-version"] == API_VERSION


def test_responses_go_upstream_with_the_catalogs_preview_api_version(azure_gateway, fake_azure):
    client = openai.OpenAI(base_url=f"{azure_gateway.url}/v1", api_key=KEY_A, max_retries=0)
    assert client.responses.create(model="responses-preview", input="hi").output_text == "echo: hi"
    list(client.responses.create(model="responses-preview", input="hi", stream=True))
    assert [(r.path, r.query["api-version"]) for r in fake_azure.requests] == [
        ("/openai/responses", RESPONSES_API_VERSION)
    ] * 2


def test_responses_on_a_dated_ga_api_version_use_azures_v1_path(azure_gateway, fake_azure):
    """Azure serves no Responses API on dated GA versions (such as 2024-10-21): LiteLLM sends those
    models' Responses calls to the v1 path with `api-version=preview`, which Azure does serve."""
    client = openai.OpenAI(base_url=f"{azure_gateway.url}/v1", api_key=KEY_A, max_retries=0)
    client.responses.create(model="every-op", input="hi")
    (upstream,) = fake_azure.requests
    assert (upstream.path, upstream.query.get("api-version")) == ("/openai/v1/responses", "preview")
