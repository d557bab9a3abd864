"""The catalog cache: TTL, background refresh, direct look-up on a miss, fallbacks, outages."""

import asyncio
import logging

import pytest

from shared.catalog import Catalog, FileCatalogSource
from shared.errors import CatalogUnavailable
from tests.support import write_catalog


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
        self.lookups = 0
        self.failing = False
        self.delay = 0.0

    async def _read(self):
        await asyncio.sleep(self.delay)
        if self.failing:
            raise ConnectionError("store unreachable")
        return list(self.documents)

    async def load(self):
        self.loads += 1
        return await self._read()

    async def lookup(self, name):
        self.lookups += 1
        documents = await self._read()
        by_id = [d for d in documents if d["id"] == name]
        return (by_id or [d for d in documents if d["code"] == name] or [None])[0]


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


def test_a_miss_looks_the_name_up_in_the_store_by_id_then_by_code_without_a_full_load():
    source = FakeSource([entry("a")])

    async def scenario():
        catalog = Catalog(source, 60, clock=Clock())
        await catalog.find("a")
        source.documents = [entry("a"), entry("new"), entry("other", code="other-prod")]
        found = await catalog.find("new"), await catalog.find("other-prod")
        return found, await catalog.find("new"), {model.id for model in await catalog.entries()}

    (new, by_code), again, listed = run(scenario())
    assert (new.id, by_code.id, again) == ("new", "other", new)
    assert listed == {"a", "new", "other"}
    assert (source.loads, source.lookups) == (1, 2)  # `again` came from the cache


def test_a_name_the_store_does_not_hold_is_looked_up_once_per_miss_window():
    source, clock = FakeSource([entry("a")]), Clock()
    source.delay = 0.01

    async def scenario():
        catalog = Catalog(source, 60, clock=clock, miss_seconds=5)
        await catalog.find("a")
        missing = await asyncio.gather(*(catalog.find("ghost") for _ in range(5)))
        clock.now += 4
        missing.append(await catalog.find("ghost"))
        lookups_within_window = source.lookups
        source.documents = [entry("a"), entry("ghost")]
        clock.now += 1
        return missing, lookups_within_window, await catalog.find("ghost")

    missing, lookups_within_window, found = run(scenario())
    assert missing == [None] * 6
    assert lookups_within_window == 1
    assert found is not None and found.id == "ghost"
    assert source.loads == 1


def test_a_look_up_during_an_outage_is_an_outage_and_the_cache_is_still_served():
    source = FakeSource([entry("a")])

    async def scenario():
        catalog = Catalog(source, 60, clock=Clock())
        await catalog.find("a")
        source.failing = True
        with pytest.raises(CatalogUnavailable) as caught:
            await catalog.find("ghost")
        source.failing = False
        return caught.value, await catalog.find("a"), await catalog.find("ghost")

    outage, cached, missing = run(scenario())
    assert outage.status == 503 and "fake source" in outage.message
    assert cached is not None and missing is None  # an outage is not remembered as a missing model


def test_fallbacks_the_catalog_does_not_hold_are_skipped_and_reported_once_per_miss_window(caplog):
    source, clock = FakeSource([entry("primary") | {"fallbacks": ["ghost", "backup"]}, entry("backup")]), Clock()

    async def scenario():
        catalog = Catalog(source, 60, clock=clock, miss_seconds=5)
        primary = await catalog.find("primary")
        assert primary is not None
        calls = [catalog.fallbacks(primary) for _ in range(3)]
        await asyncio.sleep(0.01)
        calls += [catalog.fallbacks(primary) for _ in range(3)]
        lookups_within_window = source.lookups
        clock.now += 5
        catalog.fallbacks(primary)
        await asyncio.sleep(0.01)
        return calls, lookups_within_window

    with caplog.at_level(logging.WARNING, logger="shared.catalog"):
        calls, lookups_within_window = run(scenario())
    assert all([model.id for model in call] == ["backup"] for call in calls)
    assert (source.loads, lookups_within_window, source.lookups) == (1, 1, 2)
    warnings = [r.getMessage() for r in caplog.records if "fallback" in r.getMessage()]
    assert warnings == ["model 'primary' names the fallback 'ghost', which is not in the catalog: it is skipped"] * 2


def test_an_unknown_fallback_during_an_outage_leaves_the_cached_ones():
    source = FakeSource([entry("primary") | {"fallbacks": ["ghost", "backup"]}, entry("backup")])

    async def scenario():
        catalog = Catalog(source, 60, clock=Clock())
        primary = await catalog.find("primary")
        assert primary is not None
        source.failing = True
        fallbacks = catalog.fallbacks(primary)
        await asyncio.sleep(0.01)
        return fallbacks, catalog.fallbacks(primary)

    first, second = run(scenario())
    assert [model.id for model in first] == [model.id for model in second] == ["backup"]
    assert source.lookups == 2  # a failed look-up is not remembered as a missing model


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


def test_a_model_added_to_the_catalog_file_is_found_on_the_next_call(tmp_path):
    path = write_catalog(tmp_path / "models.json", [entry("a")])

    async def scenario():
        catalog = Catalog(FileCatalogSource(path), 60, clock=Clock())
        await catalog.find("a")
        write_catalog(path, [entry("a"), entry("new"), entry("other", code="other-prod")])
        return await catalog.find("new"), await catalog.find("other-prod"), await catalog.find("ghost")

    new, by_code, missing = run(scenario())
    assert (new.id, by_code.id, missing) == ("new", "other", None)


def test_names_callers_make_up_cannot_grow_the_memory_of_misses(monkeypatch):
    from shared import catalog as catalog_module

    monkeypatch.setattr(catalog_module, "MISSES_KEPT", 50)
    source = FakeSource([entry("a")])

    async def scenario():
        catalog = Catalog(source, 60, clock=Clock())
        for index in range(500):
            assert await catalog.find(f"made-up-{index}") is None
        return len(catalog._names)

    assert run(scenario()) <= 50
