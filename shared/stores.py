"""Where the catalog, the projects and the usage records live, chosen by the settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .catalog import CatalogSource, CosmosCatalogSource, FileCatalogSource
from .cosmos import CosmosDatabase
from .projects import CosmosProjectStore, FileProjectStore, ProjectStore
from .settings import Settings
from .usage import CosmosUsageStore, FileUsageStore, UsageStore


@dataclass
class Stores:
    """Where catalog and projects live: Cosmos when COSMOS_URL is set, else local files."""

    catalog: CatalogSource
    projects: ProjectStore
    usage: UsageStore
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: Settings) -> Stores:
        if not settings.cosmos_url:
            return cls(
                FileCatalogSource(settings.models_file),
                FileProjectStore(settings.projects_file),
                FileUsageStore(settings.usage_file),
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
            CosmosUsageStore(database, settings.cosmos_usage_container_id),
            [database.close],
        )
