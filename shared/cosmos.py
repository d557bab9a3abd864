"""One async Cosmos DB client per process, shared by every container user."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.cosmos.aio import ContainerProxy, CosmosClient


@dataclass(frozen=True)
class ContainerDefinition:
    """A container as the gateway needs it (infra/modules/cosmos.bicep declares the same)."""

    id: str
    partition_key: str
    #: Seconds a document lives (Cosmos `defaultTtl`); None = TTL off, documents stay.
    default_ttl: int | None = None
    #: None = Cosmos's default (every path indexed).
    indexing_policy: dict[str, Any] | None = None


class CosmosDatabase:
    """The gateway's Cosmos database, connected on first use.

    Authenticates with the account key when one is given, else with
    `DefaultAzureCredential` (managed identity in Azure). Every use is bounded
    by `timeout()`: the SDK's own retries would otherwise hold a caller for
    about 22 s when the account cannot be reached.
    """

    def __init__(
        self, url: str, key: str | None, database_id: str, verify_tls: bool = True, timeout_seconds: float = 5.0
    ):
        self.url = url
        self.database_id = database_id
        self.timeout_seconds = timeout_seconds
        self._key = key
        self._verify_tls = verify_tls
        self._client: CosmosClient | None = None
        self._credential: Any = None
        self._containers: dict[str, ContainerProxy] = {}
        self._lock = asyncio.Lock()

    def timeout(self) -> asyncio.Timeout:
        """A context bounding one use of the database (raises TimeoutError)."""
        return asyncio.timeout(self.timeout_seconds)

    async def container(self, container_id: str) -> ContainerProxy:
        if container_id not in self._containers:
            database = (await self._connected()).get_database_client(self.database_id)
            self._containers[container_id] = database.get_container_client(container_id)
        return self._containers[container_id]

    async def _connected(self) -> CosmosClient:
        async with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    async def create_containers(self, definitions: list[ContainerDefinition]) -> list[str]:
        """Create the database and those of `definitions` that do not exist; an existing container is left as it is.

        For an emulator or an account with key auth: in Azure the template
        creates them (the app's identity may not change containers).
        """
        from azure.cosmos import PartitionKey

        client = await self._connected()
        async with self.timeout():
            database = await client.create_database_if_not_exists(self.database_id)
            existing = {properties["id"] async for properties in database.list_containers()}
            for definition in definitions:
                if definition.id in existing:
                    continue
                options: dict[str, Any] = {}
                if definition.default_ttl is not None:
                    options["default_ttl"] = definition.default_ttl
                if definition.indexing_policy is not None:
                    options["indexing_policy"] = definition.indexing_policy
                await database.create_container(definition.id, PartitionKey(definition.partition_key), **options)
        return [
            f"{definition.id}: {'exists, left as it is' if definition.id in existing else 'created'}"
            for definition in definitions
        ]

    def _connect(self) -> CosmosClient:
        from azure.cosmos.aio import CosmosClient

        credential: Any = self._key
        if credential is None:
            from azure.identity.aio import DefaultAzureCredential

            self._credential = credential = DefaultAzureCredential()
        return CosmosClient(self.url, credential=credential, connection_verify=self._verify_tls)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._credential is not None:
            await self._credential.close()
            self._credential = None
        self._containers.clear()
