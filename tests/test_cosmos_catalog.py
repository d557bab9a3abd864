"""The catalog in Cosmos DB (the npm Cosmos DB server), outages included."""

import time

import httpx
import openai
import pytest

from tests.conftest import azure_entry, gateway_env
from tests.support import CosmosServer, GatewayProcess

USER = [{"role": "user", "content": "from cosmos"}]


def cosmos_env(server: CosmosServer, database: str) -> dict[str, str]:
    return gateway_env(**server.settings(database), MODELS_FILE="/nonexistent/models.json")


@pytest.fixture(scope="module")
def cosmos_gateway(cosmos, fake_azure, tmp_path_factory):
    cosmos.seed(
        "catalog-test",
        "models",
        "/id",
        [
            azure_entry("cosmos-chat", "dep-b", fake_azure.url),
            azure_entry("cosmos-private", "dep-a", fake_azure.url, private=True, projects=["team-x"]),
        ],
    )
    cosmos.seed("catalog-test", "projects", "/id", [])
    process = GatewayProcess(cosmos_env(cosmos, "catalog-test"), tmp_path_factory.mktemp("cosmos") / "gateway.log")
    yield process.start()
    process.stop()


def test_chat_with_a_model_from_cosmos(cosmos_gateway, fake_azure):
    client = openai.OpenAI(base_url=f"{cosmos_gateway.url}/v1", api_key="local", max_retries=0)
    completion = client.chat.completions.create(model="cosmos-chat", messages=USER)
    assert completion.choices[0].message.content == "echo: from cosmos"
    assert fake_azure.requests[0].path == "/openai/deployments/dep-b/chat/completions"
    assert [m.id for m in client.models.list()] == ["cosmos-chat"]


def test_a_model_added_to_cosmos_is_found_without_waiting_for_the_ttl(cosmos, cosmos_gateway, fake_azure):
    """A miss refreshes the catalog early (at most once per second), well before its 60-s TTL.
    The wait is for the model to be found, not a fixed time: a fast gateway may
    answer the first miss within the minimum interval between refreshes."""
    client = openai.OpenAI(base_url=f"{cosmos_gateway.url}/v1", api_key="local", max_retries=0)
    client.models.list()
    seeded_at = time.monotonic()
    cosmos.seed("catalog-test", "models", "/id", [azure_entry("cosmos-new", "dep-a", fake_azure.url)])
    while True:
        try:
            completion = client.chat.completions.create(model="cosmos-new", messages=USER)
            break
        except openai.NotFoundError:
            assert time.monotonic() - seeded_at < 30, "the new model was not found within half the catalog's TTL"
            time.sleep(0.1)
    assert completion.model == "cosmos-new"


def test_a_cosmos_outage_is_a_503_never_model_not_found(fake_azure, tmp_path):
    server = CosmosServer().start()
    server.seed("outage-test", "models", "/id", [azure_entry("cosmos-chat", "dep-a", fake_azure.url)])
    server.seed("outage-test", "projects", "/id", [])
    warm = GatewayProcess(cosmos_env(server, "outage-test"), tmp_path / "warm.log").start()
    cold = GatewayProcess(cosmos_env(server, "outage-test"), tmp_path / "cold.log").start()
    try:
        assert httpx.get(f"{warm.url}/v1/models").status_code == 200
        server.stop()
        time.sleep(1.1)  # past the minimum interval between early refreshes

        for gateway in (cold, warm):
            response = httpx.post(
                f"{gateway.url}/v1/chat/completions",
                json={"model": "not-cached-anywhere", "messages": USER},
                timeout=60,
            )
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] == "catalog_unavailable"
            assert "Cosmos" in error["message"]

        # What the warm gateway had already loaded keeps working during the outage.
        served = httpx.post(
            f"{warm.url}/v1/chat/completions", json={"model": "cosmos-chat", "messages": USER}, timeout=30
        )
        assert served.status_code == 200
    finally:
        warm.stop()
        cold.stop()
        server.stop()
