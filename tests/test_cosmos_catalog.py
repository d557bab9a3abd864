"""The catalog in Cosmos DB (the npm Cosmos DB server), outages included."""

import asyncio
import time

import httpx
import openai
import pytest

from shared.catalog import CosmosCatalogSource
from shared.cosmos import CosmosDatabase
from tests.conftest import azure_entry, gateway_env
from tests.support import CosmosServer, GatewayProcess, running_gateway

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
            azure_entry("cosmos-fallback-ghost", "dep-b", fake_azure.url, fallbacks=["ghost-fallback"]),
        ],
    )
    cosmos.seed("catalog-test", "projects", "/id", [])
    with running_gateway(tmp_path_factory.mktemp("cosmos"), cosmos_env(cosmos, "catalog-test")) as process:
        yield process


def test_chat_with_a_model_from_cosmos(cosmos_gateway, fake_azure):
    client = openai.OpenAI(base_url=f"{cosmos_gateway.url}/v1", api_key="local", max_retries=0)
    completion = client.chat.completions.create(model="cosmos-chat", messages=USER)
    assert completion.choices[0].message.content == "echo: from cosmos"
    assert fake_azure.requests[0].path == "/openai/deployments/dep-b/chat/completions"
    assert [m.id for m in client.models.list()] == ["cosmos-chat", "cosmos-fallback-ghost"]


def test_cosmos_finds_a_model_by_id_then_by_code_and_any_other_name_is_none(cosmos, fake_azure):
    cosmos.seed(
        "lookup-test",
        "models",
        "/id",
        [azure_entry("by-id", "dep-a", fake_azure.url), azure_entry("dep-a", "dep-b", fake_azure.url)],
    )

    async def scenario():
        database = CosmosDatabase(cosmos.url, cosmos.KEY, "lookup-test", verify_tls=False)
        source = CosmosCatalogSource(database, "models")
        try:
            names = ["by-id", "dep-a", "dep-b", "no-such-model", "a/b?c#d", "x" * 300, "trailing "]
            return [(await source.lookup(name) or {}).get("id") for name in names]
        finally:
            await database.close()

    # "dep-a" is one model's code and another's id: the id wins, as in the cached catalog.
    assert asyncio.run(scenario()) == ["by-id", "dep-a", "dep-a", None, None, None, None]


def full_loads(gateway: GatewayProcess) -> int:
    """How many times the gateway has read the whole catalog container."""
    return gateway.log().count("shared.catalog: loaded ")


def test_a_model_added_to_cosmos_is_served_on_the_very_next_call_without_a_full_reload(
    cosmos, cosmos_gateway, fake_azure
):
    client = cosmos_gateway.client()
    client.models.list()
    loads = full_loads(cosmos_gateway)
    cosmos.seed(
        "catalog-test",
        "models",
        "/id",
        [
            azure_entry("cosmos-new", "dep-a", fake_azure.url),
            azure_entry("cosmos-new-private", "dep-a", fake_azure.url, private=True, projects=["team-x"]),
        ],
    )
    completion = client.chat.completions.create(model="cosmos-new", messages=USER)
    assert completion.model == "cosmos-new"
    with pytest.raises(openai.NotFoundError):  # found in Cosmos, but not this project's to use
        client.chat.completions.create(model="cosmos-new-private", messages=USER)
    assert full_loads(cosmos_gateway) == loads


def test_a_name_cosmos_does_not_hold_is_not_asked_for_again_straight_away(cosmos, cosmos_gateway):
    client = cosmos_gateway.client()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="never-there", messages=USER)
    time.sleep(1.1)  # a second later, with the store frozen: the answer is remembered, not asked for again
    cosmos.pause()
    try:
        started = time.monotonic()
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="never-there", messages=USER)
        assert time.monotonic() - started < 2.5  # the store timeout is 5 s
    finally:
        cosmos.resume()


def test_a_fallback_cosmos_does_not_hold_is_reported_once_and_skipped_even_while_cosmos_is_down(cosmos, cosmos_gateway):
    client = cosmos_gateway.client()
    client.models.list()
    loads = full_loads(cosmos_gateway)
    assert client.chat.completions.create(model="cosmos-fallback-ghost", messages=USER).model == "cosmos-fallback-ghost"
    time.sleep(1.1)
    cosmos.pause()
    try:
        started = time.monotonic()
        completion = client.chat.completions.create(model="cosmos-fallback-ghost", messages=USER)
        assert completion.model == "cosmos-fallback-ghost"
        assert time.monotonic() - started < 2.5  # the store timeout is 5 s
    finally:
        cosmos.resume()
    for _ in range(3):
        client.chat.completions.create(model="cosmos-fallback-ghost", messages=USER)
    assert full_loads(cosmos_gateway) == loads
    warnings = cosmos_gateway.log().count("names the fallback 'ghost-fallback', which is not in the catalog")
    assert warnings == 1


def test_a_cosmos_outage_is_a_503_never_model_not_found(fake_azure, tmp_path):
    server = CosmosServer().start()
    server.seed("outage-test", "models", "/id", [azure_entry("cosmos-chat", "dep-a", fake_azure.url)])
    server.seed("outage-test", "projects", "/id", [])
    warm = GatewayProcess(cosmos_env(server, "outage-test"), tmp_path / "warm.log").start()
    cold = GatewayProcess(cosmos_env(server, "outage-test"), tmp_path / "cold.log").start()
    try:
        assert httpx.get(f"{warm.url}/v1/models").status_code == 200
        server.stop()

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
