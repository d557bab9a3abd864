"""The key cache: look-ups are remembered, but random keys cannot grow it without end."""

import asyncio

import pytest

from shared import projects
from shared.errors import AuthenticationFailed
from shared.projects import Authenticator, hash_key, key_document_id


class CountingStore:
    description = "counting store"

    def __init__(self, documents):
        self.documents = {document["id"]: document for document in documents}
        self.reads = 0

    async def read(self, document_id):
        self.reads += 1
        return self.documents.get(document_id)


def test_known_keys_are_read_once_and_random_keys_stay_bounded(monkeypatch):
    monkeypatch.setattr(projects, "KEY_CACHE_ENTRIES", 50)
    store = CountingStore(
        [
            {"id": "team-a", "type": "project"},
            {"id": key_document_id(hash_key("sk-gw-good")), "type": "key", "project": "team-a"},
        ]
    )
    authenticator = Authenticator(store)

    async def scenario():
        for _ in range(3):
            assert (await authenticator.caller({"authorization": "Bearer sk-gw-good"})).project == "team-a"
        for index in range(500):
            with pytest.raises(AuthenticationFailed):
                await authenticator.caller({"api-key": f"sk-gw-random-{index}"})
        assert (await authenticator.caller({"authorization": "Bearer sk-gw-good"})).project == "team-a"

    asyncio.run(scenario())
    assert len(authenticator._keys) <= 50
    assert store.reads == 2 + 500  # the good key: its key and project documents, once


class FailingStore(CountingStore):
    """A key store that can go down, and then hangs as an unreachable Cosmos account does."""

    down = False

    async def read(self, document_id):
        if self.down:
            await asyncio.sleep(3600)
        return await super().read(document_id)


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def test_a_known_key_is_served_through_a_store_outage_for_the_stale_period():
    from shared.errors import KeyStoreUnavailable
    from shared.projects import KEY_CACHE_SECONDS

    store = FailingStore(
        [
            {"id": "team-a", "type": "project"},
            {"id": key_document_id(hash_key("sk-gw-good")), "type": "key", "project": "team-a"},
        ]
    )
    clock = Clock()
    authenticator = Authenticator(store, clock=clock, stale_seconds=600)

    async def bounded(store_read):
        async def read(document_id):
            async with asyncio.timeout(0.05):  # what CosmosDatabase.timeout() does
                return await store_read(document_id)

        return read

    async def scenario():
        store.read = await bounded(store.read)
        assert (await authenticator.caller({"api-key": "sk-gw-good"})).project == "team-a"
        store.down = True
        clock.now += KEY_CACHE_SECONDS + 300  # past the key cache, within the stale period
        assert (await authenticator.caller({"api-key": "sk-gw-good"})).project == "team-a"
        with pytest.raises(KeyStoreUnavailable):  # an unknown key fails fast
            await asyncio.wait_for(authenticator.caller({"api-key": "sk-gw-unknown"}), 1)
        clock.now += 600  # past the stale period
        with pytest.raises(KeyStoreUnavailable):
            await asyncio.wait_for(authenticator.caller({"api-key": "sk-gw-good"}), 1)

    asyncio.run(scenario())


def test_a_date_only_expiry_lasts_to_the_end_of_that_day_utc():
    from datetime import UTC, datetime

    from shared.projects import key_is_usable

    dated = {"id": "key-x", "expires": "2027-01-31"}
    assert key_is_usable(dated, now=datetime(2027, 1, 31, 23, 59, 59, tzinfo=UTC))
    assert not key_is_usable(dated, now=datetime(2027, 2, 1, tzinfo=UTC))
    # A date-time without a zone is UTC.
    assert not key_is_usable(
        {"id": "key-y", "expires": "2027-01-31T10:00:00"}, now=datetime(2027, 1, 31, 11, tzinfo=UTC)
    )
