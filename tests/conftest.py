"""Servers the integration tests share: Cosmos DB, a fake Azure OpenAI, gateways."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.fakes.app_insights import FakeIngestion
from tests.fakes.azure_openai import FakeAzureOpenAI
from tests.fakes.google_oauth import FakeGoogleOAuth, make_service_account
from tests.fakes.managed_identity import FakeManagedIdentity
from tests.fakes.server import ServerThread
from tests.fakes.vertex import FakeVertexAI
from tests.support import CosmosServer, GatewayProcess, running_gateway, write_catalog

#: Upstream keys per fake deployment; the gateway reads them through `$KEY_*` references.
UPSTREAM_KEYS = {
    "dep-a": "key-a-7f3a9c1e5b2d4f60",
    "dep-b": "key-b-0c8e6a4f2d1b9e37",
}
API_VERSION = "2024-10-21"
#: Every operation the gateway offers, as the catalog names them.
EVERY_OPERATION = ["ChatCompletion", "Responses", "embeddings", "images", "audio_tts", "audio_stt"]


def azure_entry(model_id: str, deployment: str, fake_url: str, **overrides: Any) -> dict[str, Any]:
    key_reference = "$KEY_B" if deployment == "dep-b" else "$KEY_A"
    entry = {
        "id": model_id,
        "name": model_id.upper(),
        "provider": "Azure",
        "model_type": "AzureOpenAI",
        "code": deployment,
        "parameters": {"endpoint": fake_url, "api_version": API_VERSION, "api_key": key_reference},
        "costs": {"input": 0.0025, "output": 0.01},
        "operations": ["ChatCompletion"],
        "projects": [],
        "private": False,
    }
    return entry | overrides


def catalog_documents(fake_url: str) -> list[dict[str, Any]]:
    """The catalog the gateways under test serve, pointing at the fake Azure OpenAI."""
    entry = azure_entry
    return [
        entry("chat-a", "dep-a", fake_url),
        entry("chat-b", "dep-b", fake_url),
        entry("rate-limited", "rate-limited", fake_url),
        entry("broken", "broken", fake_url),
        entry(
            "rate-limited-everything",
            "rate-limited",
            fake_url,
            operations=[
                "embeddings",
                "images",
                "audio_tts",
                "audio_stt",
                "Responses",
                "Completion",
                "audio_translation",
            ],
        ),
        entry("filtered", "filtered", fake_url),
        # The same refusal through LiteLLM: chat on an api-version the relay does not build, Responses, images.
        entry(
            "filtered-litellm",
            "filtered",
            fake_url,
            parameters={"endpoint": fake_url, "api_version": "latest", "api_key": "$KEY_A"},
            operations=["ChatCompletion", "Responses", "images"],
        ),
        entry("midstream-error", "midstream-error", fake_url),
        # A stream that fails once started must not move on to its fallback: the caller has bytes already.
        entry("midstream-error-event", "midstream-error-event", fake_url),
        entry("slow-stream", "slow-stream", fake_url),
        entry(
            "slow",
            "slow",
            fake_url,
            parameters={
                "endpoint": fake_url,
                "api_version": API_VERSION,
                "api_key": "$KEY_A",
                "timeout": 1,
            },
        ),
        entry("unreachable", "dep-a", "http://127.0.0.1:9"),
        entry("embed-only", "dep-a", fake_url, operations=["embeddings"]),
        entry("image-model", "dep-a", fake_url, operations=["images"]),
        entry("tts-model", "dep-b", fake_url, operations=["audio_tts"]),
        entry("stt-model", "dep-a", fake_url, operations=["audio_stt"]),
        entry("responses-model", "dep-b", fake_url, operations=["Responses"]),
        entry("instruct", "dep-b", fake_url, operations=["Completion"]),
        entry("translator", "dep-a", fake_url, operations=["audio_translation"]),
        # dep-a refuses dep-b's key: Azure's 401.
        entry(
            "wrong-key-translator",
            "dep-a",
            fake_url,
            parameters={"endpoint": fake_url, "api_version": API_VERSION, "api_key": "$KEY_B"},
            operations=["audio_translation"],
        ),
        entry(
            "every-operation",
            "dep-a",
            fake_url,
            operations=EVERY_OPERATION,
        ),
        entry(
            "misconfigured",
            "dep-a",
            fake_url,
            parameters={
                "endpoint": fake_url,
                "api_version": API_VERSION,
                "api_key": "$NOT_SET_ANYWHERE",
            },
        ),
        entry("team-x-only", "dep-a", fake_url, private=True, projects=["team-x"]),
    ]


def gateway_env(**extra: str) -> dict[str, str]:
    return {
        "ALLOW_ANONYMOUS": "true",
        "ENVIRONMENT": "test",
        "KEY_A": UPSTREAM_KEYS["dep-a"],
        "KEY_B": UPSTREAM_KEYS["dep-b"],
    } | extra


@pytest.fixture(scope="session")
def fake_azure() -> Iterator[FakeAzureOpenAI]:
    fake = FakeAzureOpenAI(keys=dict(UPSTREAM_KEYS))
    with ServerThread(fake.app) as server:
        fake.url = server.url
        yield fake


@pytest.fixture(autouse=True)
def _fresh_request_log(fake_azure: FakeAzureOpenAI) -> None:
    fake_azure.clear()


@pytest.fixture(scope="session")
def gateway(fake_azure: FakeAzureOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway on the embedded default: the catalog from MODELS_FILE."""
    directory = tmp_path_factory.mktemp("file-gateway")
    catalog = write_catalog(directory / "models.json", catalog_documents(fake_azure.url))
    with running_gateway(directory, gateway_env(MODELS_FILE=str(catalog))) as process:
        process.wait_until_answering("chat-a")  # tests time the answers: none may wait for the LiteLLM import
        yield process


@pytest.fixture(scope="module")
def ingestion() -> Iterator[FakeIngestion]:
    """An Application Insights ingestion endpoint, one per test module."""
    fake = FakeIngestion()
    with ServerThread(fake.app) as server:
        fake.url = server.url
        yield fake


@pytest.fixture(scope="module")
def identity() -> Iterator[FakeManagedIdentity]:
    """The managed identity endpoint of an Azure Functions host, one per test module."""
    fake = FakeManagedIdentity(header_secret="functions-identity-header")
    with ServerThread(fake) as server:
        fake.url = server.url
        yield fake


@pytest.fixture(scope="session")
def cosmos() -> Iterator[CosmosServer]:
    server = CosmosServer().start()
    yield server
    server.stop()


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return gateway.client("unused-locally")


@pytest.fixture
def async_client(gateway: GatewayProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="unused-locally", max_retries=0)


# Google Vertex AI: a fake OAuth server, a fake Vertex AI, a gateway with a model per family.

ACCOUNT_ONE = "gateway-one@proj-one.iam.gserviceaccount.com"
ACCOUNT_TWO = "gateway-two@proj-two.iam.gserviceaccount.com"

FAMILIES = {
    "gemini": ("GoogleVertex", "gemini-2.0-flash"),
    "claude": ("GoogleVertexClaude", "claude-3-5-sonnet-v2@20241022"),
    "llama": ("GoogleVertexMeta", "meta/llama-3.3-70b-instruct-maas"),
    "mistral": ("GoogleVertexMistral", "mistral-large@2407"),
    "jamba": ("GoogleVertexJamba", "jamba-1.5-large@001"),
    "deepseek": ("GoogleVertexDeepSeek", "deepseek-ai/deepseek-v3.2-maas"),
    "qwen": ("GoogleVertexQwen", "qwen/qwen3-coder-480b-a35b-instruct-maas"),
    "gpt-oss": ("GoogleVertexOpenAI", "openai/gpt-oss-120b-maas"),
}


def vertex_entry(model_id, model_type, code, api_base, secret="$GOOGLE_SA_ONE", operations=("ChatCompletion",)):
    return {
        "id": model_id,
        "name": model_id,
        "provider": "Google",
        "model_type": model_type,
        "code": code,
        "parameters": {
            "gcp_project": "proj-one",
            "location": "us-central1",
            "secret_name": secret,
            "api_base": api_base,
        },
        "costs": {"input": 0.001, "output": 0.002},
        "operations": list(operations),
    }


#: An image a caller sends a Vertex model, as a data URL.
PNG_DATA_URL = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


def assert_sent_the_image(sent: dict[str, Any], family: str) -> None:
    """The body sent to Vertex AI carries the image in the family's own form:
    Gemini's inline data part, or Anthropic's base64 image block."""
    if family == "gemini":
        assert any("inline_data" in part or "inlineData" in part for part in sent["contents"][0]["parts"])
    else:
        (image_block,) = [block for block in sent["messages"][0]["content"] if block["type"] == "image"]
        assert image_block["source"]["type"] == "base64"


@pytest.fixture(scope="session")
def google() -> Iterator[tuple[FakeGoogleOAuth, FakeVertexAI]]:
    oauth = FakeGoogleOAuth()
    vertex = FakeVertexAI(oauth)
    with ServerThread(oauth) as oauth_server, ServerThread(vertex) as vertex_server:
        oauth.url, vertex.url = oauth_server.url, vertex_server.url
        yield oauth, vertex


@pytest.fixture
def vertex_client(vertex_gateway: GatewayProcess, google: tuple[FakeGoogleOAuth, FakeVertexAI]) -> openai.OpenAI:
    """A client of the Vertex gateway, the fake Vertex AI's request log cleared."""
    google[1].clear()
    return vertex_gateway.client("local")


@pytest.fixture(scope="session")
def vertex_gateway(
    google, fake_azure: FakeAzureOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    oauth, vertex = google
    accounts = {
        name: make_service_account(oauth.token_uri(oauth.url), email, email.split("@")[1].split(".")[0])
        for name, email in (("GOOGLE_SA_ONE", ACCOUNT_ONE), ("GOOGLE_SA_TWO", ACCOUNT_TWO))
    }
    entries = [
        vertex_entry(family, model_type, code, vertex.url, operations=("ChatCompletion", "Completion", "Responses"))
        for family, (model_type, code) in FAMILIES.items()
    ]
    entries += [
        vertex_entry("gemini-two", "GoogleVertex", "gemini-2.5-flash", vertex.url, secret="$GOOGLE_SA_TWO"),
        vertex_entry("gemini-embed", "GoogleVertex", "text-embedding-005", vertex.url, operations=["embeddings"]),
        vertex_entry(
            "imagen",
            "GoogleVertex",
            "imagen-3.0-generate-002",
            vertex.url,
            secret="$GOOGLE_SA_TWO",
            operations=["images"],
        ),
        vertex_entry("imagen-rate-limited", "GoogleVertex", "imagen-rate-limited", vertex.url, operations=["images"]),
        vertex_entry("bad-secret", "GoogleVertex", "gemini-2.0-flash", vertex.url, secret="$NOT_A_SERVICE_ACCOUNT"),
        # Speech: Cloud Text-to-Speech, its api_base the synthesize URL; transcription: Speech-to-Text v2, Gemini.
        vertex_entry(
            "cloud-tts", "GoogleVertex", "chirp", vertex.url + "/v1/text:synthesize", operations=["audio_tts"]
        ),
        vertex_entry(
            "chirp-stt", "GoogleVertex", "chirp_2", vertex.url, secret="$GOOGLE_SA_TWO", operations=["audio_stt"]
        ),
        vertex_entry("gemini-stt", "GoogleVertex", "gemini-3.5-transcribe", vertex.url, operations=["audio_stt"]),
        vertex_entry("stt-rate-limited", "GoogleVertex", "chirp_2-rate-limited", vertex.url, operations=["audio_stt"]),
        vertex_entry("stt-forbidden", "GoogleVertex", "chirp_2-forbidden", vertex.url, operations=["audio_stt"]),
        # Gemini speech: generateContent at the root URL, as for chat.
        vertex_entry(
            "gemini-tts",
            "GoogleVertex",
            "gemini-2.5-flash-preview-tts",
            vertex.url,
            secret="$GOOGLE_SA_TWO",
            operations=["audio_tts"],
        ),
    ]
    entries += [
        vertex_entry(
            f"gemini-tts-{fault}", "GoogleVertex", f"gemini-2.5-flash-tts-{fault}", vertex.url, operations=["audio_tts"]
        )
        for fault in ("rate-limited", "invalid", "forbidden", "broken", "blocked", "unsafe")
    ]
    entries += [
        vertex_entry(
            f"gemini-{fault}", "GoogleVertex", f"gemini-{fault}", vertex.url, operations=("ChatCompletion", "Responses")
        )
        for fault in (
            "rate-limited",
            "invalid",
            "forbidden",
            "broken",
            "blocked",
            "long-decode",
            "signature-check",
            "midstream-error",
            "trickle",
        )
    ]
    # A relayed Azure OpenAI model whose deployment fails, falling back to Gemini (through LiteLLM).
    entries.append(azure_entry("azure-to-gemini", "broken", fake_azure.url, fallbacks=["gemini"]))
    entries.append(
        azure_entry(
            "azure-instruct-to-gemini", "broken", fake_azure.url, operations=["Completion"], fallbacks=["gemini"]
        )
    )
    # The same for the Responses API: Azure's own, then Gemini's over its chat completions.
    entries.append(
        azure_entry(
            "azure-responses-to-gemini", "broken", fake_azure.url, operations=["Responses"], fallbacks=["gemini"]
        )
    )
    directory = tmp_path_factory.mktemp("vertex")
    catalog = write_catalog(directory / "models.json", entries)
    env = gateway_env(
        MODELS_FILE=str(catalog),
        NOT_A_SERVICE_ACCOUNT="not-json-but-secret-ish-9f8e7d",
        **{name: json.dumps(account) for name, account in accounts.items()},
    )
    with running_gateway(directory, env) as process:
        process.accounts = accounts
        yield process
