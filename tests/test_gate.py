"""The API Management gate: with APIM_SHARED_SECRET set, only requests that
carry the secret in X-APIM-Shared-Secret reach the gateway (shared/gate.py)."""

import json

import httpx
import openai
import pytest

from shared import gate as gate_module
from shared.errors import ApiManagementRequired, ConfigurationError
from shared.gate import HEADER, Gate
from shared.settings import Settings
from tests.conftest import azure_entry, gateway_env
from tests.support import GatewayProcess, write_catalog, write_projects

SECRET = "Qm9vdHN0cmFwIHNlY3JldCBmb3IgdGVzdHMgb25seQ"
PROJECT_KEY = "sk-gw-gated-project-0001"
USER = [{"role": "user", "content": "hello through APIM"}]


# --- the gate on its own ------------------------------------------------------


@pytest.mark.parametrize("environ", [{}, {"APIM_SHARED_SECRET": ""}, {"APIM_SHARED_SECRET": "   "}])
def test_without_the_setting_the_gate_is_open(environ):
    settings = Settings.from_environment(environ)
    assert settings.apim_shared_secret is None
    assert Gate(settings.apim_shared_secret).refusal("/v1/models", {}) is None


def test_the_setting_is_read_and_kept_out_of_the_settings_repr():
    settings = Settings.from_environment({"APIM_SHARED_SECRET": SECRET})
    assert settings.apim_shared_secret == SECRET
    assert SECRET not in repr(settings)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {HEADER: ""},
        {HEADER: "wrong"},
        {HEADER: SECRET[:-1]},
        {HEADER: SECRET + "x"},
        {HEADER: SECRET.lower()},
        {"authorization": f"Bearer {SECRET}"},
    ],
)
def test_a_missing_or_wrong_secret_is_refused_with_403(headers):
    refusal = Gate(SECRET).refusal("/v1/chat/completions", headers)
    assert isinstance(refusal, ApiManagementRequired)
    assert refusal.status == 403
    assert refusal.body()["error"]["code"] == "api_management_required"
    assert refusal.body()["error"]["type"] == "permission_error"
    assert SECRET not in json.dumps(refusal.body())


def test_the_right_secret_passes():
    assert Gate(SECRET).refusal("/v1/chat/completions", {HEADER: SECRET}) is None


def test_liveness_needs_no_secret():
    assert Gate(SECRET).refusal("/health", {}) is None


def test_the_secrets_are_compared_in_constant_time(monkeypatch):
    """The decision is hmac.compare_digest's, on digests of equal length."""
    calls = []
    verdict = True

    def spy(a, b):
        calls.append((a, b))
        return verdict

    monkeypatch.setattr(gate_module.hmac, "compare_digest", spy)
    assert Gate(SECRET).refusal("/v1/models", {HEADER: "wrong"}) is None  # the spy said equal
    verdict = False
    assert Gate(SECRET).refusal("/v1/models", {HEADER: SECRET}) is not None  # the spy said different
    assert len(calls) == 2
    for given, expected in calls:
        assert isinstance(given, bytes) and len(given) == len(expected) == 32


def test_an_unresolved_key_vault_reference_refuses_everything_but_liveness():
    reference = "@Microsoft.KeyVault(SecretUri=https://kv-x.vault.azure.net/secrets/apim-shared-secret)"
    gate = Gate(reference)
    refusal = gate.refusal("/v1/models", {HEADER: reference})
    assert isinstance(refusal, ConfigurationError)
    assert refusal.status == 500
    assert "APIM_SHARED_SECRET" in refusal.message
    assert gate.refusal("/health", {}) is None


# --- end to end, against the local host ----------------------------------------


@pytest.fixture(scope="module")
def gated(fake_azure, tmp_path_factory):
    """A gateway that needs project keys and, in front of them, the APIM secret."""
    directory = tmp_path_factory.mktemp("gated")
    projects = write_projects(directory / "projects.json", {PROJECT_KEY: "team-g"})
    catalog = write_catalog(directory / "models.json", [azure_entry("gated-chat", "dep-a", fake_azure.url)])
    env = gateway_env(
        ALLOW_ANONYMOUS="false",
        MODELS_FILE=str(catalog),
        PROJECTS_FILE=str(projects),
        APIM_SHARED_SECRET=SECRET,
        MAX_REQUEST_BYTES="1000",
    )
    process = GatewayProcess(env, directory / "gateway.log").start()
    yield process
    process.stop()


def through_apim(gated, **headers):
    return openai.OpenAI(
        base_url=f"{gated.url}/v1",
        api_key=PROJECT_KEY,
        max_retries=0,
        default_headers={HEADER: SECRET} | headers,
    )


def test_a_direct_call_gets_403_with_an_openai_error_and_the_request_id(gated):
    response = httpx.get(
        f"{gated.url}/v1/models",
        headers={"authorization": f"Bearer {PROJECT_KEY}", "x-request-id": "direct-call-1"},
    )
    assert response.status_code == 403
    assert response.headers["x-request-id"] == "direct-call-1"
    assert response.json() == {
        "error": {
            "message": "Call this API through its API Management endpoint; direct calls to the app are refused.",
            "type": "permission_error",
            "param": None,
            "code": "api_management_required",
        }
    }


def test_the_openai_sdk_sees_a_permission_error_for_a_wrong_secret(gated):
    client = through_apim(gated, **{HEADER: "not-the-secret"})
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="gated-chat", messages=USER)
    assert caught.value.code == "api_management_required"
    assert SECRET not in caught.value.response.text
    assert SECRET not in gated.log()


def test_the_gate_comes_before_the_key_and_the_body(gated):
    # No key and no secret: the caller learns nothing about keys.
    assert httpx.get(f"{gated.url}/v1/models").status_code == 403
    # A body over MAX_REQUEST_BYTES is not even looked at.
    oversized = httpx.post(
        f"{gated.url}/v1/chat/completions", content=b"x" * 5000, headers={"authorization": f"Bearer {PROJECT_KEY}"}
    )
    assert oversized.status_code == 403
    # With the secret, the key is checked as usual.
    assert httpx.get(f"{gated.url}/v1/models", headers={HEADER: SECRET}).status_code == 401


def test_with_the_secret_every_call_works_streaming_included(gated):
    client = through_apim(gated)
    assert [model.id for model in client.models.list()] == ["gated-chat"]
    completion = client.chat.completions.create(model="gated-chat", messages=USER)
    assert completion.choices[0].message.content
    stream = client.chat.completions.create(
        model="gated-chat", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None


def test_liveness_answers_a_direct_probe(gated):
    response = httpx.get(f"{gated.url}/health")
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"


def test_without_the_setting_direct_calls_are_served(client):
    """The shared gateway has no APIM_SHARED_SECRET: no header needed."""
    assert client.models.list().data
