"""The composition root: builds the gateway, and what serves HTTP for it, from the settings.

`function_app.create_app` calls `compose` once per process; tests call it
(or `build_gateway`) to build gateways in process. Building is cheap and does
no I/O; clients connect on first use.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import telemetry
from .calls import Calls, Limits
from .catalog import Catalog
from .gate import Gate
from .gateway import Gateway
from .http import Endpoint, Route, http_route, respond, unrouted
from .identity import AzureTokenSource
from .limits import Limiter
from .management import Management
from .projects import Authenticator
from .providers.aiohttp_client import ConnectionPool
from .providers.azure_relay import AzureRelay
from .providers.litellm_calls import LiteLLM
from .providers.mapper import ProviderMapper, Transports
from .providers.mock import Mock
from .providers.responses_chat import ResponsesOverChat
from .providers.vertex import GoogleTokens, Vertex, VertexImagen
from .providers.vertex_chat import VertexChat
from .routing import Router
from .secrets import EnvironmentSecretSource, KeyVaultSecretSource, SecretResolver, SecretSource
from .settings import Settings
from .stored_responses import ResponseHistory
from .stores import Stores
from .usage import UsageRecorder

logger = logging.getLogger(__name__)
#: The Azure SDKs log every HTTP request and response at INFO, the telemetry exporter every batch.
for _name in (
    "azure.core.pipeline.policies.http_logging_policy",
    "azure.cosmos._cosmos_http_logging_policy",
    "azure.monitor.opentelemetry",
):
    logging.getLogger(_name).setLevel(logging.WARNING)


def build_gateway(settings: Settings) -> Gateway:
    return _gateway_and_secrets(settings)[0]


def _gateway_and_secrets(settings: Settings) -> tuple[Gateway, SecretResolver]:
    """The gateway, and the secret resolver its provider calls use (the gate reads its shared secret through it too)."""
    stores = Stores.from_settings(settings)
    tokens = AzureTokenSource()
    closers = [*stores.closers, tokens.close]
    secret_source: SecretSource
    if settings.key_vault_url:
        vault = KeyVaultSecretSource(
            settings.key_vault_url, settings.key_vault_verify_challenge_resource, settings.store_timeout_seconds
        )
        closers.append(vault.close)
        secret_source = vault
    else:
        secret_source = EnvironmentSecretSource()
    if settings.allow_anonymous:
        logger.warning(
            "ALLOW_ANONYMOUS is on: requests without a valid API key are served. Use this only on a developer machine."
        )
    catalog = Catalog(stores.catalog, settings.catalog_ttl_seconds, stale_seconds=settings.store_stale_seconds)
    authenticator = Authenticator(stores.projects, settings.allow_anonymous, stale_seconds=settings.store_stale_seconds)
    secrets = SecretResolver(secret_source, settings.secret_ttl_seconds, stale_seconds=settings.store_stale_seconds)
    litellm = LiteLLM()
    pool = ConnectionPool()
    relay = AzureRelay(pool, fallback=litellm)
    google = GoogleTokens()
    imagen = VertexImagen(google)
    vertex_chat = VertexChat(google, pool, fallback=litellm)
    # Vertex and Foundry's model inference API have no Responses API: their deployments answer it
    # over their chat completions (Azure OpenAI's answer with Azure's own, through LiteLLM).
    vertex = ResponsesOverChat(Vertex(imagen, vertex_chat))
    foundry = ResponsesOverChat(litellm)
    transports = Transports(litellm=litellm, azure_relay=relay, vertex=vertex, foundry=foundry, mock=Mock())
    providers = ProviderMapper(secrets, tokens, transports, settings.upstream_connect_seconds)
    closers += [pool.close, imagen.close, providers.close]
    limiter = Limiter(stores.limits, reservation_seconds=settings.request_timeout_seconds + 30)
    recorder = UsageRecorder(stores.usage)
    limits = Limits(
        settings.request_timeout_seconds,
        settings.stream_first_byte_timeout_seconds,
        settings.upstream_first_byte_seconds,
    )
    gateway = Gateway(
        catalog=catalog,
        calls=Calls(catalog, Router(providers), recorder, limiter, limits),
        authenticator=authenticator,
        management=Management(catalog, stores.usage, authenticator, stores.projects, limiter),
        recorder=recorder,
        environment=settings.environment,
        closers=closers,
        history=ResponseHistory(stores.responses),
    )
    return gateway, secrets


@dataclass(frozen=True)
class Service:
    """The gateway, and the gate and body limit every request passes first."""

    settings: Settings
    gateway: Gateway
    gate: Gate

    async def handle(self, request: Request, endpoint: Endpoint) -> Response:
        """Serve `request` with one of the gateway's endpoints."""
        return await respond(request, endpoint, self.settings.max_request_bytes, self.gate)


def compose(settings: Settings) -> Service:
    """Everything a Functions app serves, built from `settings`, telemetry configured."""
    telemetry.configure(settings)
    gateway, secrets = _gateway_and_secrets(settings)
    gate = Gate(settings.apim_shared_secret, settings.apim_shared_secret_previous, secrets)
    return Service(settings, gateway, gate)


@functools.cache
def not_routed(function_app: Any) -> Endpoint:
    """The 404/405 operation for requests none of `function_app`'s functions serve."""
    return unrouted(http_routes(function_app))


def http_routes(function_app: Any) -> list[Route]:
    """The route template and methods of each HTTP function of a FunctionApp.

    Read from the app's function builders: `get_functions()` may be called
    once only (a second call refuses every name as a duplicate), and the
    worker or the local host has called it already.
    """
    return [route for builder in function_app._function_builders if (route := http_route(builder._function))]
