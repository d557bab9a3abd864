"""The composition root: builds the gateway from the settings, once per process.

Building is cheap and does no I/O; clients connect on first use.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .catalog import Catalog, CatalogSource, CosmosCatalogSource, FileCatalogSource
from .cosmos import CosmosDatabase
from .gateway import Gateway
from .http import Operation, respond
from .identity import AzureTokenSource
from .providers import ProviderMapper
from .secrets import EnvironmentSecretSource, SecretResolver
from .settings import Settings


def build_gateway(settings: Settings) -> Gateway:
    source: CatalogSource
    tokens = AzureTokenSource()
    closers = [tokens.close]
    if settings.cosmos_url:
        database = CosmosDatabase(
            settings.cosmos_url,
            settings.cosmos_key,
            settings.cosmos_database_id,
            settings.cosmos_verify_tls,
        )
        source = CosmosCatalogSource(database, settings.cosmos_container_id)
        closers.append(database.close)
    else:
        source = FileCatalogSource(settings.models_file)
    secrets = SecretResolver(EnvironmentSecretSource(), settings.secret_ttl_seconds)
    return Gateway(
        catalog=Catalog(source, settings.catalog_ttl_seconds),
        providers=ProviderMapper(secrets, tokens),
        environment=settings.environment,
        closers=closers,
    )


settings = Settings.from_environment()
gateway = build_gateway(settings)


async def handle(request: Request, operation: Operation) -> Response:
    """Serve `request` with one of the gateway's operations."""
    return await respond(request, operation, settings.max_request_bytes)
