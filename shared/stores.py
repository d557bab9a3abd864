"""Where the catalog, the projects and the usage records live, chosen by the settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .catalog import CatalogSource, CosmosCatalogSource, FileCatalogSource
from .cosmos import ContainerDefinition, CosmosDatabase
from .limit_stores import CosmosCounterStore, CounterStore, MemoryCounterStore
from .projects import CosmosProjectStore, FileProjectStore, ProjectStore
from .settings import COSMOS_CONTAINERS, Settings
from .stored_responses import (
    RESPONSES_INDEXING_POLICY,
    CosmosResponseStore,
    FileResponseStore,
    ResponseStore,
)
from .usage import USAGE_INDEXING_POLICY, CosmosUsageStore, FileUsageStore, UsageStore

_DAY_SECONDS = 86_400


def cosmos_containers(settings: Settings) -> list[ContainerDefinition]:
    """The gateway's containers, under the ids the settings give them."""
    defaults = Settings()
    retention = settings.usage_retention_days
    responses_retention = settings.responses_retention_days
    return [
        ContainerDefinition(settings.cosmos_container_id, COSMOS_CONTAINERS[defaults.cosmos_container_id]),
        ContainerDefinition(
            settings.cosmos_projects_container_id, COSMOS_CONTAINERS[defaults.cosmos_projects_container_id]
        ),
        ContainerDefinition(
            settings.cosmos_usage_container_id,
            COSMOS_CONTAINERS[defaults.cosmos_usage_container_id],
            default_ttl=retention * _DAY_SECONDS if retention else None,
            indexing_policy=USAGE_INDEXING_POLICY,
        ),
        # TTL on, no default: each counter document carries its own `ttl`.
        ContainerDefinition(
            settings.cosmos_limits_container_id, COSMOS_CONTAINERS[defaults.cosmos_limits_container_id], default_ttl=-1
        ),
        ContainerDefinition(
            settings.cosmos_responses_container_id,
            COSMOS_CONTAINERS[defaults.cosmos_responses_container_id],
            default_ttl=responses_retention * _DAY_SECONDS if responses_retention else None,
            indexing_policy=RESPONSES_INDEXING_POLICY,
        ),
    ]


@dataclass
class Stores:
    """Where catalog and projects live: Cosmos when COSMOS_URL is set, else local files."""

    catalog: CatalogSource
    projects: ProjectStore
    usage: UsageStore
    #: The budget and rate limit counters: in Cosmos, shared by every instance; else in this process.
    limits: CounterStore
    responses: ResponseStore
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: The Cosmos database, when the stores are in Cosmos.
    database: CosmosDatabase | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Stores:
        if not settings.cosmos_url:
            return cls(
                FileCatalogSource(settings.models_file),
                FileProjectStore(settings.projects_file),
                FileUsageStore(settings.usage_file),
                MemoryCounterStore(),
                FileResponseStore(settings.responses_file, settings.responses_retention_days),
            )
        database = CosmosDatabase(
            settings.cosmos_url,
            settings.cosmos_key,
            settings.cosmos_database_id,
            settings.cosmos_verify_tls,
            settings.store_timeout_seconds,
        )
        return cls(
            CosmosCatalogSource(database, settings.cosmos_container_id),
            CosmosProjectStore(database, settings.cosmos_projects_container_id),
            CosmosUsageStore(database, settings.cosmos_usage_container_id, settings.usage_retention_days),
            CosmosCounterStore(database, settings.cosmos_limits_container_id),
            CosmosResponseStore(database, settings.cosmos_responses_container_id),
            [database.close],
            database,
        )
