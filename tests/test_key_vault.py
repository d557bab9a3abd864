"""Secrets from Key Vault and tokens from managed identity, as in Azure Functions.

The gateway runs with `KEY_VAULT_URL` pointing at a fake vault over TLS and
with `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` pointing at a fake App Service
managed identity endpoint, so the real async Key Vault client and
`DefaultAzureCredential` do their real work.
"""

import asyncio
import time

import httpx
import openai
import pytest

from tests.conftest import API_VERSION, azure_entry, gateway_env
from tests.fakes.key_vault import FakeKeyVault, tls_files
from tests.fakes.server import ServerThread
from tests.openapi import assert_conforms
from tests.support import running_gateway, write_catalog

VAULT_KEY = "vault-held-key-5d1c9e2a7b"
ROTATED_KEY = "vault-rotated-key-88f0c3a1"
SECRET_TTL = 2
USER = [{"role": "user", "content": "from the vault"}]


def managed_identity_token(token: str) -> bool:
    return token.startswith("mi-token-cognitiveservices.azure.com-")


@pytest.fixture(scope="module")
def vault(identity, tmp_path_factory):
    fake = FakeKeyVault(lambda token: token.startswith("mi-token-vault.azure.net-"))
    fake.set_secret("VAULT-KEY-A", VAULT_KEY)
    fake.tls = tls_files(tmp_path_factory.mktemp("vault-tls"))
    with ServerThread(fake, ssl_certfile=fake.tls.certfile, ssl_keyfile=fake.tls.keyfile) as server:
        fake.url = server.url
        yield fake


@pytest.fixture(scope="module")
def vault_gateway(fake_azure, vault, identity, tmp_path_factory):
    directory = tmp_path_factory.mktemp("vault-gateway")
    vault_key = {"endpoint": fake_azure.url, "api_version": API_VERSION, "api_key": "$VAULT_KEY_A"}
    catalog = write_catalog(
        directory / "models.json",
        [
            azure_entry("vault-chat", "dep-vault", fake_azure.url, parameters=vault_key),
            azure_entry(
                "keyless-chat",
                "dep-keyless",
                fake_azure.url,
                parameters={"endpoint": fake_azure.url, "api_version": API_VERSION},
            ),
            azure_entry(
                "keyless-stt",
                "dep-keyless",
                fake_azure.url,
                operations=["audio_stt"],
                parameters={"endpoint": fake_azure.url, "api_version": API_VERSION},
            ),
            azure_entry(
                "keyless-every",
                "dep-keyless",
                fake_azure.url,
                operations=["ChatCompletion", "embeddings", "images", "audio_tts", "Responses"],
                parameters={"endpoint": fake_azure.url, "api_version": "2025-04-01-preview"},
            ),
            azure_entry(
                "keyless-legacy",
                "dep-keyless",
                fake_azure.url,
                operations=["Completion", "audio_translation"],
                parameters={"endpoint": fake_azure.url, "api_version": API_VERSION},
            ),
            azure_entry(
                "vault-missing", "dep-vault", fake_azure.url, parameters=vault_key | {"api_key": "$NOT_IN_VAULT"}
            ),
            azure_entry(
                "vault-partly-broken",
                "dep-vault",
                fake_azure.url,
                parameters=vault_key,
                deployments=[
                    {"name": "missing", "parameters": {"api_key": "$NOT_IN_VAULT"}, "priority": 0},
                    {"name": "malformed", "parameters": {"api_key": "$NOT.A/NAME"}, "priority": 1},
                    {"name": "sound", "priority": 2},
                ],
            ),
        ],
    )
    env = gateway_env(
        MODELS_FILE=str(catalog),
        KEY_VAULT_URL=vault.url,
        KEY_VAULT_VERIFY_CHALLENGE_RESOURCE="false",
        SSL_CERT_FILE=vault.tls.ca_bundle,
        SECRET_TTL_SECONDS=str(SECRET_TTL),
        VAULT_KEY_A="an-environment-value-that-must-not-be-used",
        **identity.environment(identity.url),
    )
    fake_azure.keys |= {"dep-vault": VAULT_KEY, "dep-keyless": "no-key-accepted"}
    fake_azure.accepts_token = managed_identity_token
    with running_gateway(directory, env) as process:
        yield process
    fake_azure.accepts_token = lambda token: False


def test_secret_references_resolve_from_the_vault_once_per_ttl(vault_gateway, vault, fake_azure):
    async def burst():
        client = openai.AsyncOpenAI(base_url=f"{vault_gateway.url}/v1", api_key="local", max_retries=0)
        return await asyncio.gather(
            *(client.chat.completions.create(model="vault-chat", messages=USER) for _ in range(30))
        )

    replies = asyncio.run(burst())
    assert {reply.choices[0].message.content for reply in replies} == {"echo: from the vault"}
    assert {request.headers["api-key"] for request in fake_azure.requests_for("dep-vault")} == {VAULT_KEY}
    assert vault.reads["VAULT-KEY-A"] == 1


def rotate(client, vault, fake_azure, old: str, new: str) -> list[str]:
    """Rotate secret VAULT-KEY-A from `old` to `new` as Azure OpenAI keys are rotated: both
    valid until the gateway uses the new one, then the old one revoked. The keys the
    calls after the TTL sent, until the new one."""
    fake_azure.keys["dep-vault"] = (old, new)
    vault.set_secret("VAULT-KEY-A", new)
    time.sleep(SECRET_TTL + 0.2)
    sent: list[str] = []
    deadline = time.monotonic() + 10
    while not sent or sent[-1] != new:
        assert time.monotonic() < deadline, sent
        client.chat.completions.create(model="vault-chat", messages=USER)
        sent.append(fake_azure.requests_for("dep-vault")[-1].headers["api-key"])
    fake_azure.keys["dep-vault"] = new
    return sent


def test_a_rotated_secret_is_used_after_the_ttl_without_a_restart(vault_gateway, vault, fake_azure):
    client = vault_gateway.client()
    client.chat.completions.create(model="vault-chat", messages=USER)
    try:
        sent = rotate(client, vault, fake_azure, VAULT_KEY, ROTATED_KEY)
        # Past the TTL the first call is answered at once with the key known, while the vault is read.
        assert sent[0] == VAULT_KEY and sent[-1] == ROTATED_KEY
        client.chat.completions.create(model="vault-chat", messages=USER)
        assert fake_azure.requests_for("dep-vault")[-1].headers["api-key"] == ROTATED_KEY
    finally:
        rotate(client, vault, fake_azure, ROTATED_KEY, VAULT_KEY)


def test_a_secret_missing_from_the_vault_is_a_500_naming_the_reference(vault_gateway):
    response = httpx.post(f"{vault_gateway.url}/v1/chat/completions", json={"model": "vault-missing", "messages": USER})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "configuration_error"
    assert "$NOT_IN_VAULT" in error["message"] and "vault-missing" in error["message"]


def test_deployments_whose_references_are_missing_or_malformed_are_skipped(vault_gateway, vault, fake_azure):
    client = vault_gateway.client()
    for _ in range(4):
        assert client.chat.completions.create(model="vault-partly-broken", messages=USER).choices
    assert {request.headers["api-key"] for request in fake_azure.requests_for("dep-vault")} == {VAULT_KEY}
    assert not any("NOT.A" in request.path for request in vault.requests)  # never sent to the vault
    log = vault_gateway.log()
    assert "deployment missing cannot be called" in log and "$NOT_IN_VAULT" in log
    assert "deployment malformed cannot be called" in log and "$NOT.A/NAME is malformed" in log


def test_a_model_without_a_key_uses_the_managed_identity_token(vault_gateway, identity, fake_azure):
    client = vault_gateway.client()
    for _ in range(5):
        assert client.chat.completions.create(model="keyless-chat", messages=USER).model == "keyless-chat"
    upstream = fake_azure.requests_for("dep-keyless")
    assert len(upstream) == 5
    assert all(managed_identity_token(r.headers["authorization"].removeprefix("Bearer ")) for r in upstream)
    assert all("api-key" not in r.headers for r in upstream)
    cognitive_tokens = [t for resource, t in identity.tokens_issued if "cognitiveservices" in resource]
    assert len(cognitive_tokens) == 1  # fetched once, then cached


def test_a_keyless_transcription_uses_the_managed_identity_and_the_catalogs_api_version(vault_gateway, fake_azure):
    # Transcriptions go through a client of the gateway's own (LiteLLM ignores their api_version).
    client = vault_gateway.client()
    for _ in range(2):
        assert client.audio.transcriptions.create(model="keyless-stt", file=("a.wav", b"RIFF-not-really")).text
    upstream = fake_azure.requests_for("dep-keyless")
    assert [(r.path, r.query["api-version"]) for r in upstream] == [
        ("/openai/deployments/dep-keyless/audio/transcriptions", API_VERSION)
    ] * 2
    assert all(managed_identity_token(r.headers["authorization"].removeprefix("Bearer ")) for r in upstream)
    assert all("api-key" not in r.headers for r in upstream)


def test_a_keyless_models_token_travels_in_the_authorization_header_only(vault_gateway, fake_azure):
    # LiteLLM copies an `azure_ad_token` argument into the body of embeddings and image requests.
    client = vault_gateway.client()
    fake_azure.clear()
    assert client.chat.completions.create(model="keyless-every", messages=USER).choices
    assert client.embeddings.create(model="keyless-every", input="a b").data
    assert client.images.generate(model="keyless-every", prompt="a cat").data
    assert client.audio.speech.create(model="keyless-every", input="hi", voice="alloy").read()
    assert client.responses.create(model="keyless-every", input="hi").output
    upstream = fake_azure.requests_for("dep-keyless")
    assert sorted(r.path.rsplit("/", 1)[-1] for r in upstream) == [
        "completions",
        "embeddings",
        "generations",
        "responses",
        "speech",
    ]
    for request in upstream:
        token = request.headers["authorization"].removeprefix("Bearer ")
        assert managed_identity_token(token)
        assert token.encode() not in request.body, request.path
        assert "azure_ad_token" not in (request.json or {}), request.path


def test_a_keyless_completion_and_translation_send_the_managed_identity_token(vault_gateway, fake_azure):
    client = vault_gateway.client()
    fake_azure.clear()
    raw = client.completions.with_raw_response.create(model="keyless-legacy", prompt="from the vault")
    assert_conforms("CreateCompletionResponse", raw.http_response.json(), "keyless completion")
    assert raw.parse().choices[0].text == "echo: from the vault"
    chunks = list(
        client.completions.create(
            model="keyless-legacy", prompt="from the vault", stream=True, stream_options={"include_usage": True}
        )
    )
    for chunk in chunks:
        assert_conforms("CreateCompletionResponse", chunk.to_dict(), "keyless completion chunk")
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == "echo: from the vault"
    translation = client.audio.translations.with_raw_response.create(
        model="keyless-legacy", file=("a.wav", b"RIFF-not-really")
    )
    assert_conforms("CreateTranslationResponseJson", translation.http_response.json(), "keyless translation")
    assert translation.parse().text

    upstream = fake_azure.requests_for("dep-keyless")
    assert [(r.path, r.query["api-version"]) for r in upstream] == [
        ("/openai/deployments/dep-keyless/completions", API_VERSION),
        ("/openai/deployments/dep-keyless/completions", API_VERSION),
        ("/openai/deployments/dep-keyless/audio/translations", API_VERSION),
    ]
    for request in upstream:
        token = request.headers["authorization"].removeprefix("Bearer ")
        assert managed_identity_token(token), request.path
        assert "api-key" not in request.headers and token.encode() not in request.body, request.path


def test_no_vault_secret_or_token_reaches_the_log(vault_gateway, identity):
    vault_gateway.client().chat.completions.create(model="vault-chat", messages=USER)
    log = vault_gateway.log()
    for secret in (VAULT_KEY, ROTATED_KEY, *(token for _, token in identity.tokens_issued)):
        assert secret not in log


APIM_SECRET = "apim-secret-from-the-vault-3f9a"
APIM_PREVIOUS = "apim-previous-from-the-vault-c2d1"


@pytest.fixture(scope="module")
def gated_vault_gateway(vault, identity, tmp_path_factory):
    """The app as infra/main.bicep sets it up behind API Management: the shared
    secrets are names of Key Vault secrets, read by the app's own client."""
    vault.set_secret("apim-shared-secret", APIM_SECRET)
    vault.set_secret("apim-shared-secret-previous", APIM_PREVIOUS)
    directory = tmp_path_factory.mktemp("gated-vault-gateway")
    env = gateway_env(
        KEY_VAULT_URL=vault.url,
        KEY_VAULT_VERIFY_CHALLENGE_RESOURCE="false",
        SSL_CERT_FILE=vault.tls.ca_bundle,
        SECRET_TTL_SECONDS=str(SECRET_TTL),
        APIM_SHARED_SECRET="$apim-shared-secret",
        APIM_SHARED_SECRET_PREVIOUS="$apim-shared-secret-previous",
        **identity.environment(identity.url),
    )
    with running_gateway(directory, env) as process:
        yield process


def test_the_gate_reads_the_current_and_previous_secret_from_the_vault(gated_vault_gateway, vault):
    def status(secret: str) -> int:
        return httpx.get(f"{gated_vault_gateway.url}/v1/models", headers={"x-apim-shared-secret": secret}).status_code

    assert status(APIM_SECRET) == 200
    assert status(APIM_PREVIOUS) == 200
    assert status("$apim-shared-secret") == 403
    assert status("") == 403
    assert vault.reads["apim-shared-secret"] == 1 and vault.reads["apim-shared-secret-previous"] == 1
    # A rotated secret is taken once SECRET_TTL_SECONDS are over, without a restart (the secret past
    # its TTL matched nothing: it is compared again with the one the vault holds).
    vault.set_secret("apim-shared-secret", "apim-rotated-secret-77b0")
    time.sleep(SECRET_TTL + 0.2)
    assert status("apim-rotated-secret-77b0") == 200
    assert status(APIM_SECRET) == 403
    assert APIM_SECRET not in gated_vault_gateway.log() and APIM_PREVIOUS not in gated_vault_gateway.log()
