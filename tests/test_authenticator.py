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
    store = CountingStore([
        {"id": "team-a", "type": "project"},
        {"id": key_document_id(hash_key("sk-gw-good")), "type": "key", "project": "team-a"},
    ])  # fmt: skip
    authenticator = Authenticator(store)

    async def scenario():
        for _ in range(3):
            assert (await authenticator.caller({"authorization": "Bearer sk-gw-good"})).project == "team-a"
        for index in range(500):
            with pytest.raises(AuthenticationFailed):
                await authenticator.caller({"api-key": f"sk-gw-random-{index}"})
        assert (await authenticator.caller({"authorization": "Bearer sk-gw-good"})).project == "team-a"

    asyncio.run(scenario())
    assert len(authenticator._cache) <= 50
    assert store.reads == 2 + 500  # the good key: its key and project documents, once
