"""Stored responses through the official openai client: `store`, retrieve, input items, delete, and
`previous_response_id` continuations, on Azure OpenAI and on Vertex models.

Two gateway instances share one Cosmos database (the Cosmos test server): a
response written by one is continued, read and deleted through the other on
the very next call. A response is visible only to the project that created it.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from shared.cosmos import CosmosDatabase
from shared.settings import Settings
from shared.stored_responses import CHUNK_CHARACTERS, CosmosResponseStore, StoredResponse
from tests.conftest import azure_entry, gateway_env, vertex_entry
from tests.openapi import assert_conforms
from tests.support import CosmosServer, GatewayProcess, create_containers, project_documents

TEAM_A, TEAM_B = "sk-gw-team-a-responses", "sk-gw-team-b-responses"
DATABASE = "stored-responses"
FAMILIES = ["azure", "gemini", "claude"]
FUNCTION_TOOL = {
    "type": "function",
    "name": "lookup_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def instances(cosmos, fake_azure, google, vertex_gateway, tmp_path_factory):
    """Two gateways on one Cosmos database: an Azure OpenAI model and Gemini and Claude on Vertex."""
    vertex = google[1]
    models = [
        azure_entry("azure", "dep-b", fake_azure.url, operations=["Responses"]),
        vertex_entry("gemini", "GoogleVertex", "gemini-2.0-flash", vertex.url, operations=["Responses"]),
        vertex_entry(
            "claude", "GoogleVertexClaude", "claude-3-5-sonnet-v2@20241022", vertex.url, operations=["Responses"]
        ),
    ]

    create_containers(cosmos.url, DATABASE)
    cosmos.seed(DATABASE, "models", "/id", models)
    cosmos.seed(DATABASE, "projects", "/id", project_documents({TEAM_A: "team-a", TEAM_B: "team-b"}))
    accounts = {name: json.dumps(account) for name, account in vertex_gateway.accounts.items()}
    env = gateway_env(**cosmos.settings(DATABASE), **accounts) | {"ALLOW_ANONYMOUS": "false"}
    started = []
    try:
        for name in ("one", "two"):
            directory = tmp_path_factory.mktemp(f"responses-{name}")
            started.append(GatewayProcess(env, directory / "gateway.log").start())
        yield started
    finally:
        for process in started:
            process.stop()


def clients(instances, key=TEAM_A):
    return instances[0].client(key), instances[1].client(key)


def upstream_bodies(family, fake_azure, google):
    """The bodies the provider of `family` received, oldest first."""
    requests = fake_azure.requests if family == "azure" else google[1].requests
    return [request.body.decode() for request in requests]


@pytest.fixture(autouse=True)
def _fresh_vertex_log(google):
    google[1].clear()


@pytest.mark.parametrize("family", FAMILIES)
def test_a_continuation_works_on_the_next_call_on_another_instance(instances, fake_azure, google, family):
    one, two = clients(instances)
    first = one.responses.create(model=family, input="my name is Ada", max_output_tokens=50)
    second = two.responses.create(
        model=family, previous_response_id=first.id, input="what is my name", max_output_tokens=50
    )
    assert second.output_text == "echo: what is my name"
    assert second.previous_response_id == first.id
    sent = upstream_bodies(family, fake_azure, google)[-1]
    assert "my name is Ada" in sent and "echo: my name is Ada" in sent and "what is my name" in sent
    assert "previous_response_id" not in sent  # the gateway keeps the conversation, not the provider
    if family == "azure":
        assert json.loads(sent)["store"] is False  # and Azure keeps nothing of it

    # A streamed continuation of the continuation: stored before its last event, so readable at once.
    with one.responses.stream(
        model=family, previous_response_id=second.id, input="and now?", max_output_tokens=50
    ) as stream:
        third = stream.get_final_response()
    sent = upstream_bodies(family, fake_azure, google)[-1]
    assert all(text in sent for text in ("my name is Ada", "echo: what is my name", "and now?"))
    assert two.responses.retrieve(third.id).output_text == "echo: and now?"
    assert third.previous_response_id == second.id


@pytest.mark.parametrize("family", FAMILIES)
def test_a_stored_response_is_retrieved_listed_and_deleted(instances, family):
    one, two = clients(instances)
    given = [{"role": "user", "content": [{"type": "input_text", "text": "keep this"}]}]
    created = one.responses.create(model=family, input=given, instructions="be brief", max_output_tokens=50)
    assert created.store is True

    retrieved = two.responses.retrieve(created.id)
    assert (retrieved.id, retrieved.output_text, retrieved.model) == (created.id, created.output_text, family)
    assert created.output_text.endswith("keep this") and retrieved.instructions == "be brief"
    headers = {"Authorization": f"Bearer {TEAM_A}"}
    raw = httpx.get(f"{instances[1].url}/v1/responses/{created.id}", headers=headers, timeout=30)
    assert raw.status_code == 200 and raw.json() == created.model_dump(mode="json", exclude_unset=True)
    assert_conforms("Response", raw.json(), "retrieved response")

    items = two.responses.input_items.list(created.id)
    (item,) = items.data
    assert (item.type, item.role, item.content[0].text) == ("message", "user", "keep this")
    listed = httpx.get(f"{instances[0].url}/v1/responses/{created.id}/input_items", headers=headers, timeout=30)
    assert_conforms("ResponseItemList", listed.json(), "input items")

    assert two.responses.delete(created.id) is None  # the SDK returns nothing for a 200
    with pytest.raises(openai.NotFoundError):
        one.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        one.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        one.responses.create(model=family, previous_response_id=created.id, input="again")


@pytest.mark.parametrize(
    ("family", "tools"),
    [("azure", False), ("gemini", False), ("gemini", True), ("claude", False), ("claude", True)],
    ids=["azure-text", "gemini-text", "gemini-function-call", "claude-text", "claude-function-call"],
)
def test_a_stored_response_is_replayed_as_its_stream(instances, family, tools):
    one, two = clients(instances)
    options = {"tools": [FUNCTION_TOOL]} if tools else {}
    created = one.responses.create(model=family, input="Paris", max_output_tokens=50, **options)
    replayed = list(two.responses.retrieve(created.id, stream=True))
    assert replayed[-1].type == "response.completed" and replayed[-1].response == created
    if options:
        (done,) = [event for event in replayed if event.type == "response.function_call_arguments.done"]
        assert json.loads(done.arguments) == {"echo": "Paris"}
    else:
        assert "".join(e.delta for e in replayed if e.type == "response.output_text.delta") == created.output_text
    url = f"{instances[0].url}/v1/responses/{created.id}?stream=true"
    with httpx.stream("GET", url, headers={"Authorization": f"Bearer {TEAM_A}"}, timeout=30) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    events = [json.loads(line.removeprefix("data: ")) for line in lines]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    for event in events:
        assert_conforms("ResponseStreamEvent", event, f"replayed {event['type']}")


def test_input_items_are_paged_in_openais_order(instances):
    one, _ = clients(instances)
    given = [{"role": "user", "content": f"turn {number}"} for number in range(5)]
    created = one.responses.create(model="gemini", input=given)
    newest_first = one.responses.input_items.list(created.id, limit=2)
    assert [item.content[0].text for item in newest_first.data] == ["turn 4", "turn 3"]
    assert newest_first.has_more is True
    rest = one.responses.input_items.list(created.id, limit=10, after=newest_first.last_id)
    assert [item.content[0].text for item in rest.data] == ["turn 2", "turn 1", "turn 0"]
    assert rest.has_more is False
    oldest_first = one.responses.input_items.list(created.id, order="asc")
    assert [item.content[0].text for item in oldest_first.data] == [f"turn {number}" for number in range(5)]
    assert [item.id for item in oldest_first.data] == [item.id for item in reversed(newest_first.data + rest.data)]


def test_another_projects_response_does_not_exist_for_it(instances):
    own, _ = clients(instances)
    other, other_elsewhere = clients(instances, TEAM_B)
    created = own.responses.create(model="claude", input="private to team a", max_output_tokens=20)
    for attempt in (
        lambda: other.responses.retrieve(created.id),
        lambda: other_elsewhere.responses.input_items.list(created.id),
        lambda: other.responses.delete(created.id),
        lambda: other_elsewhere.responses.create(model="claude", previous_response_id=created.id, input="hi"),
    ):
        with pytest.raises(openai.NotFoundError) as refused:
            attempt()
        assert_conforms("ErrorResponse", refused.value.response.json())
        assert refused.value.response.json() == {
            "error": {
                "message": f"Response with id '{created.id}' not found.",
                "type": "invalid_request_error",
                "param": "previous_response_id" if "previous_response_id" in refused.value.response.text else None,
                "code": "response_not_found",
            }
        }
    assert own.responses.retrieve(created.id).output_text == "echo: private to team a"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_response_with_store_false_is_not_kept(instances, stream):
    one, two = clients(instances)
    if stream:
        with one.responses.stream(model="gemini", input="forget me", store=False) as events:
            created = events.get_final_response()
    else:
        created = one.responses.create(model="gemini", input="forget me", store=False)
    assert created.store is False and created.output_text == "echo: forget me"
    with pytest.raises(openai.NotFoundError):
        two.responses.retrieve(created.id)


def test_an_agent_loop_continues_a_function_call_with_its_output(instances, google):
    """The loop the OpenAI Agents SDK runs: the model calls a tool, the next call sends only the tool's output."""
    one, two = clients(instances)
    with one.responses.stream(model="claude", input="Paris", tools=[FUNCTION_TOOL], max_output_tokens=50) as s:
        called = s.get_final_response()
    (call,) = [item for item in called.output if item.type == "function_call"]
    answered = two.responses.create(
        model="claude",
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[FUNCTION_TOOL],
        max_output_tokens=50,
    )
    assert answered.output_text == "echo: sunny"
    sent = google[1].requests[-1].json
    assert [message["role"] for message in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"][0]["type"] == "tool_use"
    assert sent["messages"][2]["content"][0]["type"] == "tool_result"
    (output_item,) = two.responses.input_items.list(answered.id).data
    assert output_item.type == "function_call_output" and output_item.output == "sunny"


def test_the_file_store_keeps_responses_for_a_gateway_without_cosmos(vertex_gateway):
    client = vertex_gateway.client("local")
    first = client.responses.create(model="gemini", input="remember me")
    second = client.responses.create(model="gemini", previous_response_id=first.id, input="who am I")
    assert client.responses.retrieve(second.id).previous_response_id == first.id
    assert [item.content[0].text for item in client.responses.input_items.list(second.id).data] == ["who am I"]
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    assert client.responses.retrieve(second.id).output_text == "echo: who am I"


def test_a_response_larger_than_a_cosmos_document_is_kept_in_chunks_of_its_partition(cosmos, instances):
    from azure.cosmos import CosmosClient

    large = "x" * (2 * CHUNK_CHARACTERS + 10)
    stored = StoredResponse(
        "resp_large", "team-a", {"id": "resp_large", "output": []}, [{"role": "user", "content": large}], ["msg_1"]
    )
    container = (
        CosmosClient(cosmos.url, credential=CosmosServer.KEY, connection_verify=False)
        .get_database_client(DATABASE)
        .get_container_client(Settings().cosmos_responses_container_id)
    )

    def partition() -> list[str]:
        found = container.query_items(
            "SELECT c.id FROM c WHERE c.response_id = @id",
            parameters=[{"name": "@id", "value": "resp_large"}],
            partition_key="resp_large",
        )
        return sorted(item["id"] for item in found)

    async def use(operation):
        database = CosmosDatabase(cosmos.url, CosmosServer.KEY, DATABASE, verify_tls=False)
        try:
            return await operation(CosmosResponseStore(database, Settings().cosmos_responses_container_id))
        finally:
            await database.close()

    asyncio.run(use(lambda store: store.put(stored)))
    assert partition() == ["resp_large", "resp_large:1", "resp_large:2", "resp_large:3"]
    assert asyncio.run(use(lambda store: store.get("resp_large"))) == stored
    assert asyncio.run(use(lambda store: store.delete("resp_large"))) is True
    assert partition() == []
    assert asyncio.run(use(lambda store: store.get("resp_large"))) is None


def test_azure_openai_clients_reach_stored_responses_on_azures_paths(instances):
    client = openai.AzureOpenAI(
        azure_endpoint=instances[0].url, api_key=TEAM_A, api_version="2025-03-01-preview", max_retries=0
    )
    created = client.responses.create(model="gemini", input="from an Azure client")
    assert client.responses.retrieve(created.id).output_text == created.output_text
    (item,) = client.responses.input_items.list(created.id).data
    assert item.content[0].text == "from an Azure client"
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        instances[1].client(TEAM_A).responses.retrieve(created.id)


def test_a_response_that_cannot_be_stored_is_not_answered_as_if_it_were(instances, cosmos):
    one, _ = clients(instances)
    one.responses.create(model="gemini", input="warm the caches")  # the key and the model, known
    cosmos.pause()
    try:
        with pytest.raises(openai.InternalServerError) as refused:
            one.responses.create(model="gemini", input="keep me")
        assert refused.value.status_code == 503
        assert refused.value.response.json()["error"]["code"] == "response_store_unavailable"
        with pytest.raises(openai.APIError, match="Stored responses cannot be read or written"):
            list(one.responses.create(model="gemini", input="keep me", stream=True))
        assert one.responses.create(model="gemini", input="not kept", store=False).output_text == "echo: not kept"
    finally:
        cosmos.resume()
