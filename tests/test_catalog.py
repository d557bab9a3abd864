"""The catalog cache: TTL, background refresh, early refresh on a miss, outages."""

import asyncio

import pytest

from shared.catalog import Catalog, FileCatalogSource
from shared.errors import CatalogUnavailable


def entry(model_id, code=None):
    return {
        "id": model_id,
        "provider": "Azure",
        "model_type": "AzureOpenAI",
        "code": code or f"{model_id}-deployment",
        "parameters": {"endpoint": "https://example.openai.azure.com"},
        "operations": ["ChatCompletion"],
    }


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeSource:
    description = "fake source"

    def __init__(self, documents):
        self.documents = documents
        self.loads = 0
        self.failing = False
        self.delay = 0.0

    async def load(self):
        self.loads += 1
        await asyncio.sleep(self.delay)
        if self.failing:
            raise ConnectionError("store unreachable")
        return list(self.documents)


def run(coroutine):
    return asyncio.run(coroutine)


def test_lookup_by_id_then_by_code():
    source = FakeSource([entry("gpt-4o", code="gpt-4o-prod")])

    async def scenario():
        catalog = Catalog(source, 60)
        return await catalog.find("gpt-4o"), await catalog.find("gpt-4o-prod")

    by_id, by_code = run(scenario())
    assert by_id is not None and by_id is by_code


def test_concurrent_first_use_loads_once_and_fresh_cache_is_not_reloaded():
    source = FakeSource([entry("a")])
    source.delay = 0.05

    async def scenario():
        catalog = Catalog(source, 60, clock=Clock())
        await asyncio.gather(*(catalog.find("a") for _ in range(20)))
        await catalog.find("a")

    run(scenario())
    assert source.loads == 1


def test_stale_cache_is_served_while_one_background_refresh_runs():
    source = FakeSource([entry("a")])
    clock = Clock()

    async def scenario():
        catalog = Catalog(source, 60, clock=clock)
        await catalog.find("a")
        source.documents = [entry("a"), entry("b")]
        source.delay = 0.05
        clock.now += 61
        stale = await asyncio.gather(*(catalog.entries() for _ in range(10)))
        await asyncio.sleep(0.1)
        return stale, await catalog.entries()

    stale, fresh = run(scenario())
    assert all(len(entries) == 1 for entries in stale)
    assert {model.id for model in fresh} == {"a", "b"}
    assert source.loads == 2


def test_a_miss_triggers_one_early_refresh_at_most_once_per_interval():
    source = FakeSource([entry("a")])
    clock = Clock()

    async def scenario():
        catalog = Catalog(source, 60, miss_refresh_interval=1.0, clock=clock)
        await catalog.find("a")
        source.documents = [entry("a"), entry("new")]
        clock.now += 2
        found = await catalog.find("new")
        missing = await asyncio.gather(*(catalog.find("ghost") for _ in range(5)))
        return found, missing

    found, missing = run(scenario())
    assert found is not None and found.id == "new"
    assert missing == [None] * 5
    assert source.loads == 2


def test_an_unreachable_store_is_an_outage_not_a_missing_model():
    source = FakeSource([entry("a")])
    source.failing = True

    async def scenario():
        await Catalog(source, 60).find("a")

    with pytest.raises(CatalogUnavailable) as caught:
        run(scenario())
    assert caught.value.status == 503
    assert "fake source" in caught.value.message


def test_a_failed_background_refresh_keeps_serving_the_cache():
    source = FakeSource([entry("a")])
    clock = Clock()

    async def scenario():
        catalog = Catalog(source, 60, clock=clock)
        await catalog.find("a")
        source.failing = True
        clock.now += 61
        await catalog.find("a")
        await asyncio.sleep(0.01)
        return await catalog.find("a")

    assert run(scenario()) is not None


def test_invalid_documents_are_skipped_and_the_rest_served(tmp_path, caplog):
    path = tmp_path / "models.json"
    path.write_text(
        '[{"id": "ok", "provider": "Azure", "model_type": "AzureOpenAI", "code": "c",'
        ' "parameters": {"endpoint": "https://e"}},'
        ' {"id": "bad", "provider": "Mars", "model_type": "AzureOpenAI", "code": "c"}]'
    )

    async def scenario():
        return await Catalog(FileCatalogSource(path), 60).entries()

    assert [model.id for model in run(scenario())] == ["ok"]
    assert "'bad'" in caplog.text and "'provider'" in caplog.text


def test_through_an_outage_the_cached_catalog_is_served_for_the_stale_period_only():
    source, clock = FakeSource([entry("gpt-4o")]), Clock()

    async def scenario():
        catalog = Catalog(source, 60, clock=clock, stale_seconds=600)
        assert await catalog.find("gpt-4o") is not None
        source.failing = True
        clock.now += 60 + 500  # past the TTL, within the stale period: served, refreshed in the background
        assert await catalog.find("gpt-4o") is not None
        await asyncio.sleep(0.01)
        clock.now += 200  # past the stale period: the store must answer
        with pytest.raises(CatalogUnavailable):
            await catalog.find("gpt-4o")
        source.failing = False
        assert await catalog.find("gpt-4o") is not None

    run(scenario())
