"""The one place that turns a catalog entry into a provider call: the
transport that calls the deployment (chosen here, once per deployment),
LiteLLM's arguments, and for Azure OpenAI deployments the URL and headers the
gateway's relay (`azure_relay.py`) sends chat completions and embeddings with.

Every credential is passed explicitly on every call: LiteLLM falls back to its
globals and to environment variables for any credential left out, and that
must never let one model borrow another's key.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..domain import Deployment, LLMModel, ModelType, Operation, Provider
from ..errors import ConfigurationError
from .base import Transport
from .litellm_import import litellm

DEFAULT_TIMEOUT_SECONDS = 600.0
#: The longest wait for a connection to a provider (TCP and TLS), per attempt (`UPSTREAM_CONNECT_SECONDS`).
DEFAULT_CONNECT_SECONDS = 5.0
DEFAULT_VERTEX_LOCATION = "us-central1"
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
#: The Azure AI model inference API's version when the catalog names none: the one
#: Microsoft's Foundry Models REST examples and its azure-ai-inference SDK send.
FOUNDRY_API_VERSION = "2024-05-01-preview"
#: Where a Foundry resource serves the model inference API (`https://<resource>.services.ai.azure.com/models`).
FOUNDRY_MODELS_PATH = "/models"
#: What LiteLLM sees as the messages of a call whose messages travel in `extra_body`.
PLACEHOLDER_MESSAGE = {"role": "user", "content": ""}


#: Azure OpenAI api-versions whose URLs the relay builds: dated GA and preview versions.
RELAYED_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
#: Deployment names the relay puts in a URL path as they are.
RELAYED_DEPLOYMENT = re.compile(r"^[A-Za-z0-9._-]+$")


class FoundryAuth(str, Enum):
    """How a Foundry deployment's calls are authorised: the header the model inference API reads."""

    #: The resource's key, in `api-key`.
    KEY = "api-key"
    #: An Entra ID token (managed identity), as `Authorization: Bearer <token>`.
    ENTRA_ID = "entra-id"


def foundry_models_base(endpoint: str) -> str:
    """The model inference API's root for a Foundry endpoint, given as the resource's
    (`https://<resource>.services.ai.azure.com`) or as that root itself (`.../models`)."""
    base = endpoint.rstrip("/")
    return base if base.endswith(FOUNDRY_MODELS_PATH) else base + FOUNDRY_MODELS_PATH


def foundry_authorisation(auth: FoundryAuth) -> Callable[[Any], Any]:
    """An httpx request hook that puts the credential LiteLLM set in the one header
    `auth` calls for. LiteLLM chooses the header by the endpoint's host name
    (`api-key` for chat on `*.services.ai.azure.com`, `Authorization: Bearer`
    elsewhere and for every embeddings call), the model inference API by the
    credential: a key in `api-key`, an Entra ID token as a bearer token."""

    async def authorise(request: Any) -> None:
        key = request.headers.pop("api-key", None)
        bearer = request.headers.pop("authorization", None)
        credential = key if key is not None else bearer.removeprefix("Bearer ") if bearer is not None else None
        if credential is None:
            return
        if auth is FoundryAuth.KEY:
            request.headers["api-key"] = credential
        else:
            request.headers["authorization"] = f"Bearer {credential}"

    return authorise


class TokenSource(Protocol):
    """Bearer tokens for a scope (Entra ID through managed identity in Azure)."""

    async def token(self, scope: str) -> str: ...


class SecretReferences(Protocol):
    """The values of the secret references (`"$NAME"`) in a deployment's
    parameters (`secrets.SecretResolver`: the environment or Key Vault)."""

    async def resolve_parameters(self, parameters: dict[str, Any], *, model_id: str) -> dict[str, Any]: ...


class EntraToken:
    """An Entra ID token, passed to LiteLLM as `azure_ad_token_provider`.

    LiteLLM 1.110 copies an `azure_ad_token` argument into the JSON body of
    Azure embeddings and image requests, where the provider (and anything
    that logs bodies) would read it; a token provider only ever reaches the
    Authorization header. The repr, part of LiteLLM's client cache key, names
    the token by a digest, never by its value.
    """

    def __init__(self, token: str) -> None:
        self._token = token
        self._digest = hashlib.sha256(token.encode()).hexdigest()[:16]

    def __call__(self) -> str:
        return self._token

    def __repr__(self) -> str:
        return f"EntraToken(sha256:{self._digest})"


@dataclass(frozen=True)
class AzureDeployment:
    """Where the relay sends an Azure OpenAI deployment's calls, and how they are authorised."""

    #: The resource's endpoint, without a trailing slash.
    endpoint: str
    #: The path's deployment and the body's `model`, as the openai SDK under LiteLLM sends them.
    deployment: str
    api_version: str
    headers: dict[str, str] = field(repr=False)
    #: The longest wait for bytes from the provider (the catalog's `timeout`).
    timeout: float
    #: The longest wait for a new connection (TCP and TLS).
    connect_seconds: float
    #: The credential in `headers`, kept out of error messages.
    secret: str = field(repr=False)

    def url(self, operation: str) -> str:
        """The URL the openai SDK under LiteLLM builds for `operation` (`chat/completions`, `embeddings`)."""
        return f"{self.endpoint}/openai/deployments/{self.deployment}/{operation}?api-version={self.api_version}"


def relayable_azure(endpoint: Any, api_version: Any, deployment_code: str) -> bool:
    """Whether the relay builds the URLs LiteLLM would for this catalog shape:
    a dated api-version, a plain https/http endpoint (a path prefix is fine, a
    query or a trailing `/openai` are not) and a deployment name safe in a path.
    Other shapes (v1/latest/preview versions, say) go through LiteLLM."""
    if not isinstance(endpoint, str) or not isinstance(api_version, str):
        return False
    parts = urlsplit(endpoint)
    return (
        parts.scheme in ("https", "http")
        and bool(parts.netloc)
        and not parts.query
        and not parts.fragment
        and not parts.path.rstrip("/").endswith("/openai")
        and RELAYED_API_VERSION.match(api_version) is not None
        and RELAYED_DEPLOYMENT.match(deployment_code) is not None
    )


#: The operations the relay sends itself; the relay's deployments go through LiteLLM for the others.
RELAYED_OPERATIONS = frozenset({Operation.CHAT_COMPLETION, Operation.EMBEDDINGS})


def relayed(model: LLMModel, operation: Operation) -> bool:
    """Whether every deployment of `model` is relayed for `operation` (judged
    from the catalog entry; a secret reference is not a URL, so it is not)."""
    return (
        operation in RELAYED_OPERATIONS
        and model.provider is Provider.AZURE
        and model.model_type is ModelType.AZURE_OPENAI
        and all(
            relayable_azure(
                d.parameters.get("api_base") or d.parameters.get("endpoint"), d.parameters.get("api_version"), d.code
            )
            for d in model.deployments
        )
    )


def needs_litellm(model: LLMModel, operation: Operation) -> bool:
    """Whether a call of `operation` to `model` may go through LiteLLM: not
    when it is relayed, nor for a Mock model (the gateway answers it: `mock.py`)."""
    return model.provider is not Provider.MOCK and not relayed(model, operation)


async def load_litellm_for(models: list[LLMModel], operation: Operation) -> None:
    """Import LiteLLM now if a call of `operation` to one of `models` may need
    it: its import (seconds, once per process) is the gateway's cost, never a
    caller's time budget, so the gateway does it before a call's deadline starts."""
    if any(needs_litellm(model, operation) for model in models):
        await litellm()


@dataclass(frozen=True)
class ProviderCall:
    """One deployment, ready to be called: its transport, LiteLLM's arguments for
    it, and the secret values in them."""

    deployment: Deployment
    #: How this deployment is called (`ProviderMapper` chooses it).
    transport: Transport = field(repr=False, compare=False)
    arguments: dict[str, Any]
    secrets: tuple[str, ...] = field(default=(), repr=False)
    #: A Mock deployment's parameters (its `response`, `dimensions`, `tool_call`: see `mock.py`).
    mock_parameters: dict[str, Any] | None = None
    #: Send chat `messages` in `extra_body`, past the openai SDK's transform (see `keyword_arguments`).
    raw_messages: bool = False
    #: An Azure OpenAI deployment's address and headers, when the relay calls it (see `relayable_azure`).
    azure_relay: AzureDeployment | None = None
    #: The longest wait for a new connection to the provider (TCP and TLS).
    connect_seconds: float = DEFAULT_CONNECT_SECONDS
    #: LiteLLM's HTTP client for this call, when the `timeout` argument cannot carry the connect
    #: budget (and for Foundry, to send the credential in the header its kind calls for).
    litellm_client: Callable[[], Any] | None = field(default=None, repr=False, compare=False)
    #: An Azure deployment's `AsyncAzureOpenAI` client, for LiteLLM's transcriptions (`ProviderMapper.azure_client`).
    azure_client: Callable[[], Any] | None = field(default=None, repr=False, compare=False)
    #: The openai SDK client LiteLLM's embeddings are to use (they take no HTTP client), when
    #: the deployment needs one of the gateway's (`ProviderMapper.foundry_embeddings_client`).
    embeddings_client: Callable[[], Any] | None = field(default=None, repr=False, compare=False)

    def http_timeout(self) -> Any:
        """The attempt's `httpx.Timeout`: the connect budget, then the model's
        `timeout` for each wait for bytes (LiteLLM's `timeout` argument)."""
        import httpx

        timeout = self.arguments["timeout"]
        return httpx.Timeout(timeout, connect=min(self.connect_seconds, timeout))

    @property
    def undisclosed(self) -> tuple[str, ...]:
        """What no error passed on may carry: the secrets, and the upstream's address."""
        api_base = self.arguments.get("api_base")
        return (*self.secrets, api_base) if isinstance(api_base, str) and api_base else self.secrets

    def keyword_arguments(self, request: dict[str, Any]) -> dict[str, Any]:
        """LiteLLM's keyword arguments: the request's, then this deployment's.

        For Azure OpenAI, chat messages travel in `extra_body`, as the caller
        sent them (the gateway has validated them): otherwise the openai SDK
        under LiteLLM walks every message against its type hints in pure
        Python on the event loop, about 4.5 s per MB of messages, and every
        other request of the worker waits.
        """
        merged = request | self.arguments | {"timeout": self.http_timeout()}
        if self.litellm_client is not None and "client" not in request:
            merged["client"] = self.litellm_client()
        if self.raw_messages and "messages" in request:
            merged["extra_body"] = request.get("extra_body", {}) | {"messages": request["messages"]}
            merged["messages"] = [PLACEHOLDER_MESSAGE]
        return merged


@dataclass(frozen=True)
class Transports:
    """The ways of calling a provider, built in the composition root; each deployment gets one."""

    litellm: Transport
    #: Azure OpenAI deployments the relay can address (`relayable_azure`).
    azure_relay: Transport
    #: Vertex AI deployments (Imagen for images, Gemini and Claude chat translated by the gateway).
    vertex: Transport
    #: Azure AI Foundry deployments (LiteLLM's, the Responses API over their chat completions).
    foundry: Transport
    mock: Transport


class ProviderMapper:
    def __init__(
        self,
        secrets: SecretReferences,
        tokens: TokenSource,
        transports: Transports,
        connect_seconds: float = DEFAULT_CONNECT_SECONDS,
    ) -> None:
        self.secrets = secrets
        self.tokens = tokens
        self.transports = transports
        self.connect_seconds = connect_seconds
        self._azure_clients: dict[tuple[str, str, str], Any] = {}
        self._http_clients: dict[tuple[float, FoundryAuth | None], Any] = {}

    async def call_for(self, model: LLMModel, deployment: Deployment) -> ProviderCall:
        """The deployment ready to be called, with the transport that calls it."""
        parameters = await self.secrets.resolve_parameters(deployment.parameters, model_id=model.id)
        if model.model_type is ModelType.AZURE_FOUNDRY:
            call = await self._foundry(model, deployment, parameters)
        elif model.provider is Provider.AZURE:
            call = await self._azure(model, deployment, parameters)
            call = replace(call, azure_client=functools.partial(self.azure_client, call))
        elif model.provider is Provider.MOCK:
            call = _mock(model, deployment, parameters, self.transports.mock)
        else:
            call = self._vertex(model, deployment, parameters)
        return replace(call, connect_seconds=self.connect_seconds)

    async def _azure(self, model: LLMModel, deployment: Deployment, parameters: dict[str, Any]) -> ProviderCall:
        api_base = parameters.get("api_base") or parameters.get("endpoint")
        if not api_base:
            raise ConfigurationError(f"Model '{model.id}' is misconfigured: parameters.endpoint is missing.")
        arguments = _common(model, deployment, parameters) | {
            "api_base": api_base,
            "api_version": parameters.get("api_version"),
        }
        raw_messages = model.model_type is ModelType.AZURE_OPENAI
        api_key = parameters.get("api_key")
        if api_key:
            arguments["api_key"] = api_key
            auth = {"api-key": api_key}
            secret = api_key
        else:
            secret = await self.tokens.token(COGNITIVE_SERVICES_SCOPE)
            arguments["azure_ad_token_provider"] = EntraToken(secret)
            auth = {"Authorization": f"Bearer {secret}"}
        relay = None
        if raw_messages and relayable_azure(api_base, arguments["api_version"], deployment.code):
            endpoint = api_base.rstrip("/")
            relay = AzureDeployment(
                endpoint,
                deployment.code,
                arguments["api_version"],
                auth,
                arguments["timeout"],
                min(self.connect_seconds, arguments["timeout"]),
                secret,
            )
        transport = self.transports.litellm if relay is None else self.transports.azure_relay
        return ProviderCall(deployment, transport, arguments, (secret,), raw_messages=raw_messages, azure_relay=relay)

    async def _foundry(self, model: LLMModel, deployment: Deployment, parameters: dict[str, Any]) -> ProviderCall:
        """An Azure AI Foundry deployment, called on the resource's model inference API
        (`<endpoint>/models/chat/completions`, `/models/embeddings`) through LiteLLM's
        `azure_ai` provider, the deployment named by the body's `model`.

        The credential always goes to LiteLLM as `api_key`, an Entra ID token
        included: without one LiteLLM looks for a key in the environment
        (`AZURE_AI_API_KEY`, `AZURE_OPENAI_API_KEY`, `AZURE_API_KEY`) before it
        uses a token provider. The gateway's HTTP client then puts it in the
        header its kind calls for (`foundry_authorisation`).
        """
        endpoint = parameters.get("api_base") or parameters.get("endpoint")
        if not endpoint:
            raise ConfigurationError(f"Model '{model.id}' is misconfigured: parameters.endpoint is missing.")
        api_key = parameters.get("api_key")
        auth = FoundryAuth.KEY if api_key else FoundryAuth.ENTRA_ID
        credential = api_key or await self.tokens.token(COGNITIVE_SERVICES_SCOPE)
        arguments = _common(model, deployment, parameters) | {
            "api_base": foundry_models_base(endpoint),
            "api_version": parameters.get("api_version") or FOUNDRY_API_VERSION,
            "api_key": credential,
        }
        timeout = arguments["timeout"]
        return ProviderCall(
            deployment,
            self.transports.foundry,
            arguments,
            (credential,),
            litellm_client=functools.partial(self.http_client, timeout, auth),
            embeddings_client=functools.partial(self.foundry_embeddings_client, arguments, auth),
        )

    def foundry_embeddings_client(self, arguments: dict[str, Any], auth: FoundryAuth) -> Any:
        """The openai SDK client for one Foundry embeddings call: LiteLLM's own sends
        no `api-version`, which the model inference API requires. It shares the
        gateway's HTTP client for the deployment's `timeout` and credential kind,
        and never retries (see `_unretried_openai_client`)."""
        return _unretried_openai_client()(
            api_key=arguments["api_key"],
            base_url=arguments["api_base"],
            default_query={"api-version": arguments["api_version"]},
            http_client=self.http_client(arguments["timeout"], auth).client,
        )

    def azure_client(self, call: ProviderCall) -> Any:
        """An `AsyncAzureOpenAI` client for an Azure call, for LiteLLM's `client`
        argument; one per endpoint, api_version and credential, reused.

        LiteLLM 1.110.2's Azure `atranscription` drops its `api_version`
        argument (it reads the AZURE_API_VERSION environment variable or uses its
        own preview default) but uses a client it is given as it is, so a client
        built with the catalog's `api_version` makes that version go upstream.
        Without an API key the client asks the token source for each request.
        """
        arguments = call.arguments
        api_key = arguments.get("api_key")
        credential = hashlib.sha256(api_key.encode()).hexdigest() if api_key else "entra-id"
        key = (arguments["api_base"], arguments["api_version"] or "", credential)
        client = self._azure_clients.get(key)
        if client is None:
            from openai import AsyncAzureOpenAI

            client = AsyncAzureOpenAI(
                azure_endpoint=arguments["api_base"],
                api_version=arguments["api_version"],
                max_retries=0,
                **({"api_key": api_key} if api_key else {"azure_ad_token_provider": self._entra_token}),
            )
            self._azure_clients[key] = client
        return client

    async def _entra_token(self) -> str:
        return await self.tokens.token(COGNITIVE_SERVICES_SCOPE)

    def http_client(self, timeout: float, auth: FoundryAuth | None = None) -> Any:
        """LiteLLM's HTTP client for calls of models with this `timeout` (and, for
        Foundry, this credential kind: see `foundry_authorisation`), one per
        combination, reused. LiteLLM gives Vertex and Foundry requests a number,
        one wait for every phase (it keeps an `httpx.Timeout` only for OpenAI
        and Azure OpenAI), so this client caps each request's wait for a
        connection at the budget; called once LiteLLM is loaded."""
        client = self._http_clients.get((timeout, auth))
        if client is None:
            import httpx
            from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

            connect_seconds = min(self.connect_seconds, timeout)

            async def cap_connect(request: httpx.Request) -> None:
                limits = request.extensions.get("timeout") or {}
                given = limits.get("connect")
                request.extensions["timeout"] = limits | {
                    "connect": connect_seconds if given is None else min(given, connect_seconds)
                }

            hooks: list[Callable[..., Any]] = [cap_connect]
            if auth is not None:
                hooks.append(foundry_authorisation(auth))
            client = AsyncHTTPHandler(
                timeout=httpx.Timeout(timeout, connect=connect_seconds), event_hooks={"request": hooks}
            )
            self._http_clients[(timeout, auth)] = client
        return client

    async def close(self) -> None:
        """Close the clients `azure_client` and `http_client` made (at shutdown)."""
        for client in [*self._azure_clients.values(), *self._http_clients.values()]:
            await client.close()
        self._azure_clients.clear()
        self._http_clients.clear()

    def _vertex(self, model: LLMModel, deployment: Deployment, parameters: dict[str, Any]) -> ProviderCall:
        arguments = _common(model, deployment, parameters) | {
            "vertex_project": parameters.get("gcp_project"),
            "vertex_location": parameters.get("location") or DEFAULT_VERTEX_LOCATION,
        }
        if parameters.get("api_base"):
            arguments["api_base"] = parameters["api_base"]
        client = functools.partial(self.http_client, arguments["timeout"])
        credentials = parameters.get("secret_name")
        if not credentials:
            return ProviderCall(deployment, self.transports.vertex, arguments, litellm_client=client)
        try:
            account = json.loads(credentials)
        except ValueError:
            raise ConfigurationError(
                f"Model '{model.id}' is misconfigured: {deployment.parameters['secret_name']} "
                "is not a service-account JSON document."
            ) from None
        arguments["vertex_credentials"] = account
        secrets = (credentials, str(account.get("private_key", "")))
        return ProviderCall(deployment, self.transports.vertex, arguments, secrets, litellm_client=client)


@functools.cache
def _unretried_openai_client() -> type[Any]:
    """`AsyncOpenAI` whose `max_retries` stays 0. LiteLLM's azure_ai embeddings pass
    the call's `max_retries` (0) on as none, and so set the client's to LiteLLM's
    default (2): the SDK would retry a failed attempt twice inside the attempt's
    time, where the gateway's routing moves on to the next deployment."""
    from openai import AsyncOpenAI

    class UnretriedAsyncOpenAI(AsyncOpenAI):
        @property
        def max_retries(self) -> int:
            return 0

        @max_retries.setter
        def max_retries(self, value: int) -> None:
            """LiteLLM's setting is ignored."""

    return UnretriedAsyncOpenAI


def _mock(model: LLMModel, deployment: Deployment, parameters: dict[str, Any], transport: Transport) -> ProviderCall:
    """The Mock transport answers from the deployment's parameters; no provider is called."""
    return ProviderCall(deployment, transport, _common(model, deployment, parameters), mock_parameters=parameters)


def _common(model: LLMModel, deployment: Deployment, parameters: dict[str, Any]) -> dict[str, Any]:
    timeout = parameters.get("timeout", DEFAULT_TIMEOUT_SECONDS)
    return {"model": model.litellm_model_for(deployment.code), "timeout": float(timeout), "max_retries": 0}
