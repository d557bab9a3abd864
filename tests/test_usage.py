"""Usage records for every call, the usage report, and the model management API."""

import time

import httpx
import openai
import pytest

from shared.settings import COSMOS_CONTAINERS, Settings
from tests.conftest import catalog_documents, gateway_env
from tests.support import (
    CosmosServer,
    GatewayProcess,
    project_documents,
    running_gateway,
    write_catalog,
    write_projects,
)

TEAM_KEY = "sk-gw-usage-team-0001"
ADMIN_KEY = "sk-gw-usage-admin-0002"
USER = [{"role": "user", "content": "hello there gateway"}]
CHAT_COST = (3 * 0.0025 + 4 * 0.01) / 1000


KEYS = {TEAM_KEY: "team-a", ADMIN_KEY: "platform"}
USAGE_CONTAINER = Settings().cosmos_usage_container_id


@pytest.fixture(scope="module")
def metered(fake_azure, tmp_path_factory):
    directory = tmp_path_factory.mktemp("usage")
    projects = write_projects(directory / "projects.json", KEYS, admins={"platform"})
    catalog = write_catalog(directory / "models.json", catalog_documents(fake_azure.url))
    env = gateway_env(ALLOW_ANONYMOUS="false", MODELS_FILE=str(catalog), PROJECTS_FILE=str(projects))
    with running_gateway(directory, env) as process:
        yield process


def wait_for_record(gateway, request_id, timeout=10.0):
    return gateway.usage_record(request_id, timeout)


def test_a_plain_call_is_recorded_with_exact_tokens_and_cost(metered):
    metered.client(TEAM_KEY, "u-plain").chat.completions.create(model="chat-a", messages=USER)
    record = wait_for_record(metered, "u-plain")
    assert record["project"] == "team-a" and record["model"] == "chat-a"
    assert record["operation"] == "ChatCompletion" and record["status"] == 200
    assert (record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]) == (3, 4, 7)
    assert record["cost"] == pytest.approx(CHAT_COST)
    assert record["stream"] is False and record["latency_ms"] > 0
    assert record["timestamp"].endswith("Z") and record["id"]


def test_streams_are_recorded_even_when_the_caller_did_not_ask_for_usage(metered, fake_azure):
    chunks = list(
        metered.client(TEAM_KEY, "u-stream").chat.completions.create(model="chat-a", messages=USER, stream=True)
    )
    assert all(chunk.usage is None for chunk in chunks)
    assert fake_azure.requests[0].json["stream_options"] == {"include_usage": True}
    record = wait_for_record(metered, "u-stream")
    assert (record["prompt_tokens"], record["completion_tokens"], record["stream"]) == (3, 4, True)

    asked = list(
        metered.client(TEAM_KEY, "u-stream-usage").chat.completions.create(
            model="chat-a", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert asked[-1].usage.total_tokens == 7
    assert wait_for_record(metered, "u-stream-usage")["total_tokens"] == 7


def test_a_call_that_fails_upstream_is_recorded_with_its_status(metered):
    with pytest.raises(openai.RateLimitError):
        metered.client(TEAM_KEY, "u-429").chat.completions.create(model="rate-limited", messages=USER)
    record = wait_for_record(metered, "u-429")
    assert (record["status"], record["total_tokens"], record["cost"]) == (429, 0, 0)


def test_every_operation_is_recorded(metered):
    client = metered.client(TEAM_KEY, "u-emb")
    client.embeddings.create(model="embed-only", input="three words here")
    assert wait_for_record(metered, "u-emb")["operation"] == "embeddings"
    assert wait_for_record(metered, "u-emb")["prompt_tokens"] == 3

    metered.client(TEAM_KEY, "u-resp").responses.create(model="responses-model", input="count me")
    record = wait_for_record(metered, "u-resp")
    assert (record["operation"], record["completion_tokens"]) == ("Responses", 3)

    list(
        metered.client(TEAM_KEY, "u-resp-stream").responses.create(
            model="responses-model", input="count me", stream=True
        )
    )
    record = wait_for_record(metered, "u-resp-stream")
    assert (record["stream"], record["completion_tokens"]) == (True, 3)

    metered.client(TEAM_KEY, "u-tts").audio.speech.create(model="tts-model", voice="alloy", input="hi")
    assert wait_for_record(metered, "u-tts")["operation"] == "audio_tts"

    # gpt-image models count tokens (DALL-E models do not): the record has them, and so does the caller.
    image = metered.client(TEAM_KEY, "u-img").images.generate(model="image-model", prompt="a red cat", quality="low")
    record = wait_for_record(metered, "u-img")
    assert record["operation"] == "images"
    assert (
        (record["prompt_tokens"], record["completion_tokens"])
        == (3, 272)
        == (
            image.usage.input_tokens,
            image.usage.output_tokens,
        )
    )


def test_a_client_that_leaves_mid_stream_is_still_recorded(metered, fake_azure):
    with httpx.stream(
        "POST",
        f"{metered.url}/v1/chat/completions",
        json={"model": "slow-stream", "messages": USER, "stream": True},
        headers={"Authorization": f"Bearer {TEAM_KEY}", "x-request-id": "u-gone"},
    ) as response:
        for line in response.iter_lines():
            if "w2" in line:
                break
    record = wait_for_record(metered, "u-gone")
    assert record["status"] == 499 and record["stream"] is True
    deadline = time.monotonic() + 5
    while "closed" not in fake_azure.stream_outcomes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_azure.stream_outcomes == ["closed"]  # the upstream stream was cancelled too


def test_the_usage_report_totals_match_the_records(metered):
    for index in range(3):
        metered.client(TEAM_KEY, f"u-report-{index}").chat.completions.create(model="chat-b", messages=USER)
    wait_for_record(metered, "u-report-2")
    records = [r for r in metered.usage_records() if r["project"] == "team-a"]

    report = httpx.get(
        f"{metered.url}/v1/usage", params={"group_by": "model"}, headers={"Authorization": f"Bearer {TEAM_KEY}"}
    ).json()
    assert report["project"] == "team-a"
    by_model = {row["model"]: row for row in report["data"]}
    chat_b = [r for r in records if r["model"] == "chat-b"]
    assert by_model["chat-b"]["requests"] == len(chat_b)
    assert by_model["chat-b"]["total_tokens"] == sum(r["total_tokens"] for r in chat_b)
    assert report["total"]["requests"] == len(records)
    assert report["total"]["cost"] == pytest.approx(sum(r["cost"] for r in records))

    daily = httpx.get(
        f"{metered.url}/v1/usage", params={"group_by": "day"}, headers={"Authorization": f"Bearer {TEAM_KEY}"}
    ).json()
    assert sum(row["requests"] for row in daily["data"]) == len(records)

    admin_view = httpx.get(
        f"{metered.url}/v1/admin/usage", params={"project": "team-a"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    ).json()
    assert admin_view["total"] == report["total"]

    empty = httpx.get(
        f"{metered.url}/v1/usage",
        params={"start": "2001-01-01", "end": "2001-02-01"},
        headers={"Authorization": f"Bearer {TEAM_KEY}"},
    ).json()
    assert empty["total"]["requests"] == 0
    bad = httpx.get(
        f"{metered.url}/v1/usage", params={"start": "last tuesday"}, headers={"Authorization": f"Bearer {TEAM_KEY}"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "start"


def test_a_report_spans_at_most_366_days(metered):
    """Each day of a report is one query of a Cosmos partition: a report over years would be thousands."""
    headers = {"Authorization": f"Bearer {TEAM_KEY}"}
    year = httpx.get(f"{metered.url}/v1/usage", params={"start": "2024-01-01", "end": "2025-01-01"}, headers=headers)
    assert year.status_code == 200, year.text
    longer = httpx.get(f"{metered.url}/v1/usage", params={"start": "2001-01-01", "end": "2026-01-01"}, headers=headers)
    assert longer.status_code == 400 and longer.json()["error"]["param"] == "start"
    assert "366 days" in longer.json()["error"]["message"]


def new_model(fake_url, **overrides):
    return {
        "name": "Added at runtime",
        "provider": "Azure",
        "model_type": "AzureOpenAI",
        "code": "dep-a",
        "parameters": {"endpoint": fake_url, "api_version": "2024-10-21", "api_key": "$KEY_A"},
        "costs": {"input": 0.001, "output": 0.002},
        "operations": ["ChatCompletion"],
    } | overrides


def test_admin_api_needs_an_admin_project(metered):
    for key in (TEAM_KEY, None):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = httpx.get(f"{metered.url}/v1/admin/models", headers=headers)
        assert response.status_code == (403 if key else 401)


def test_admin_model_round_trip_is_visible_at_once(metered, fake_azure):
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    url = f"{metered.url}/v1/admin/models/runtime-model"
    created = httpx.put(url, json=new_model(fake_azure.url), headers=admin)
    assert created.status_code == 201 and created.json()["id"] == "runtime-model"
    assert (
        metered.client(TEAM_KEY).chat.completions.create(model="runtime-model", messages=USER).model == "runtime-model"
    )

    assert httpx.get(url, headers=admin).json()["parameters"]["api_key"] == "$KEY_A"
    listed = httpx.get(f"{metered.url}/v1/admin/models", headers=admin).json()["data"]
    assert "runtime-model" in {document["id"] for document in listed}

    updated = httpx.put(url, json=new_model(fake_azure.url, operations=["embeddings"]), headers=admin)
    assert updated.status_code == 200
    with pytest.raises(openai.BadRequestError):
        metered.client(TEAM_KEY).chat.completions.create(model="runtime-model", messages=USER)

    assert httpx.delete(url, headers=admin).json()["deleted"] is True
    with pytest.raises(openai.NotFoundError):
        metered.client(TEAM_KEY).chat.completions.create(model="runtime-model", messages=USER)
    assert httpx.delete(url, headers=admin).status_code == 404
    assert httpx.get(url, headers=admin).status_code == 404


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"provider": "AWS"}, "provider"),
        ({"model_type": "Bedrock"}, "model_type"),
        ({"operations": ["ChatCompletion", "teleport"]}, "operations"),
        ({"parameters": {"api_key": "$KEY_A"}}, "parameters.endpoint"),
        (
            {"provider": "Google", "model_type": "GoogleVertex", "parameters": {"location": "x"}},
            "parameters.gcp_project",
        ),
        ({"costs": {"input": -1}}, "costs"),
        ({"id": "another-id"}, "id"),
    ],
)
def test_admin_refuses_invalid_documents_naming_the_field(metered, fake_azure, overrides, param):
    response = httpx.put(
        f"{metered.url}/v1/admin/models/checked-model",
        json=new_model(fake_azure.url, **overrides),
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_usage_survives_a_cosmos_outage(fake_azure, tmp_path):
    server = CosmosServer().start()

    def seed():
        server.seed("usage-test", "models", "/id", catalog_documents(fake_azure.url))
        server.seed("usage-test", "projects", "/id", project_documents(KEYS, admins={"platform"}))
        server.seed("usage-test", USAGE_CONTAINER, COSMOS_CONTAINERS[USAGE_CONTAINER], [])

    seed()
    env = gateway_env(ALLOW_ANONYMOUS="false", **server.settings("usage-test"))
    gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
    try:
        gateway.client(TEAM_KEY, "c-before").chat.completions.create(model="chat-a", messages=USER)
        assert wait_for_cosmos(server, {"c-before"})
        server.stop()
        during = {f"c-during-{index}" for index in range(5)}
        for request_id in sorted(during):
            gateway.client(TEAM_KEY, request_id).chat.completions.create(model="chat-a", messages=USER)
        time.sleep(1)
        server = CosmosServer(port=server.port).start()  # an empty server: the data was in memory
        seed()
        assert wait_for_cosmos(server, during, timeout=45)
    finally:
        gateway.stop()
        server.stop()
    assert "usage-record" not in gateway.log()


def wait_for_cosmos(server, request_ids, timeout=15.0):
    from azure.cosmos import CosmosClient

    container = (
        CosmosClient(server.url, credential=CosmosServer.KEY, connection_verify=False)
        .get_database_client("usage-test")
        .get_container_client(USAGE_CONTAINER)
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = {
            item["request_id"] for item in container.query_items("SELECT * FROM c", enable_cross_partition_query=True)
        }
        if request_ids <= stored:
            return True
        time.sleep(0.2)
    return False
