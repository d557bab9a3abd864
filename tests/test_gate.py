"""The API Management gate: with APIM_SHARED_SECRET set, only requests that
carry the secret in X-APIM-Shared-Secret reach the gateway (shared/gate.py)."""

import asyncio
import json

import httpx
import openai
import pytest

from shared import gate as gate_module
from shared.errors import ApiManagementRequired, ConfigurationError, SecretStoreUnavailable
from shared.gate import HEADER, Gate
from shared.secrets import SecretResolver
from shared.settings import Settings
from tests.conftest import azure_entry, gateway_env
from tests.support import running_gateway, write_catalog, write_projects

SECRET = "Qm9vdHN0cmFwIHNlY3JldCBmb3IgdGVzdHMgb25seQ"
PROJECT_KEY = "sk-gw-gated-project-0001"
USER = [{"role": "user", "content": "hello through APIM"}]


# --- the gate on its own ------------------------------------------------------


def refused(gate, path, headers):
    """The gate's answer, once what it started in the background (a secret's refresh) is done."""

    async def answer():
        refusal = await gate.refusal(path, headers)
        while tasks := asyncio.all_tasks() - {asyncio.current_task()}:
            await asyncio.wait(tasks)
        return refusal

    return asyncio.run(answer())


@pytest.mark.parametrize("environ", [{}, {"APIM_SHARED_SECRET": ""}, {"APIM_SHARED_SECRET": "   "}])
def test_without_the_setting_the_gate_is_open(environ):
    settings = Settings.from_environment(environ)
    assert settings.apim_shared_secret is None
    assert refused(Gate(settings.apim_shared_secret), "/v1/models", {}) is None


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
    refusal = refused(Gate(SECRET), "/v1/chat/completions", headers)
    assert isinstance(refusal, ApiManagementRequired)
    assert refusal.status == 403
    assert refusal.body()["error"]["code"] == "api_management_required"
    assert refusal.body()["error"]["type"] == "permission_error"
    assert SECRET not in json.dumps(refusal.body())


def test_the_right_secret_passes():
    assert refused(Gate(SECRET), "/v1/chat/completions", {HEADER: SECRET}) is None


def test_liveness_needs_no_secret():
    assert refused(Gate(SECRET), "/health", {}) is None


def test_the_secrets_are_compared_in_constant_time(monkeypatch):
    """The decision is hmac.compare_digest's, on digests of equal length."""
    calls = []
    verdict = True

    def spy(a, b):
        calls.append((a, b))
        return verdict

    monkeypatch.setattr(gate_module.hmac, "compare_digest", spy)
    assert refused(Gate(SECRET), "/v1/models", {HEADER: "wrong"}) is None  # the spy said equal
    verdict = False
    assert refused(Gate(SECRET), "/v1/models", {HEADER: SECRET}) is not None  # the spy said different
    assert len(calls) == 2
    for given, expected in calls:
        assert isinstance(given, bytes) and len(given) == len(expected) == 32


def test_an_unresolved_key_vault_reference_refuses_everything_but_liveness():
    reference = "@Microsoft.KeyVault(SecretUri=https://kv-x.vault.azure.net/secrets/apim-shared-secret)"
    gate = Gate(reference)
    refusal = refused(gate, "/v1/models", {HEADER: reference})
    assert isinstance(refusal, ConfigurationError)
    assert refusal.status == 500
    assert "APIM_SHARED_SECRET" in refusal.message
    assert refused(gate, "/health", {}) is None


PREVIOUS = "UHJldmlvdXMgc2VjcmV0IHN0aWxsIHNlbnQgYnkgQVBJTQ"


def test_the_previous_secret_is_read_and_kept_out_of_the_settings_repr():
    settings = Settings.from_environment({"APIM_SHARED_SECRET": SECRET, "APIM_SHARED_SECRET_PREVIOUS": PREVIOUS})
    assert settings.apim_shared_secret_previous == PREVIOUS
    assert PREVIOUS not in repr(settings)


def test_the_current_and_the_previous_secret_pass_and_nothing_else():
    gate = Gate(SECRET, PREVIOUS)
    assert refused(gate, "/v1/models", {HEADER: SECRET}) is None
    assert refused(gate, "/v1/models", {HEADER: PREVIOUS}) is None
    for wrong in ("", "wrong", SECRET + PREVIOUS, PREVIOUS[:-1]):
        assert isinstance(refused(gate, "/v1/models", {HEADER: wrong}), ApiManagementRequired)


def test_a_previous_secret_alone_does_not_close_the_gate():
    assert refused(Gate(None, PREVIOUS), "/v1/models", {}) is None


def test_both_secrets_are_compared_whichever_matches(monkeypatch):
    """No short cut after a match: the time taken does not tell which secret was sent."""
    calls = []
    real = gate_module.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(gate_module.hmac, "compare_digest", spy)
    gate = Gate(SECRET, PREVIOUS)
    for sent in (SECRET, PREVIOUS, "wrong"):
        calls.clear()
        refused(gate, "/v1/models", {HEADER: sent})
        assert len(calls) == 2, sent


class Vault:
    """A secret source holding Key Vault secrets by name, counting reads; `down` makes it fail."""

    description = "Key Vault https://kv-test.vault.azure.net/"

    def __init__(self, **secrets):
        self.secrets = dict(secrets)
        self.reads = 0
        self.down = False

    async def get(self, name):
        self.reads += 1
        if self.down:
            raise SecretStoreUnavailable("the vault did not answer in time")
        return self.secrets.get(name)


def vault_gate(vault, clock=lambda: 0.0, ttl=300.0):
    resolver = SecretResolver(vault, ttl_seconds=ttl, clock=clock, stale_seconds=900.0)
    return Gate("$apim-shared-secret", "$apim-shared-secret-previous", resolver)


def test_references_are_read_from_the_vault_and_cached():
    vault = Vault(**{"apim-shared-secret": SECRET, "apim-shared-secret-previous": PREVIOUS})
    gate = vault_gate(vault)
    assert refused(gate, "/v1/models", {HEADER: "$apim-shared-secret"}) is not None  # the name is no secret
    for sent in (SECRET, PREVIOUS, SECRET):
        assert refused(gate, "/v1/models", {HEADER: sent}) is None
    assert vault.reads == 2  # one read per secret, then the cache


def test_a_missing_previous_secret_means_only_the_current_one_passes():
    vault = Vault(**{"apim-shared-secret": SECRET})
    gate = vault_gate(vault)
    assert refused(gate, "/v1/models", {HEADER: SECRET}) is None
    assert isinstance(refused(gate, "/v1/models", {HEADER: PREVIOUS}), ApiManagementRequired)
    refused(gate, "/v1/models", {HEADER: SECRET})
    assert vault.reads == 2, "that the secret is missing is cached too, not asked per request"


def test_a_missing_current_secret_refuses_with_a_configuration_error():
    vault = Vault(**{"apim-shared-secret-previous": PREVIOUS})
    refusal = refused(vault_gate(vault), "/v1/models", {HEADER: PREVIOUS})
    assert isinstance(refusal, ConfigurationError)
    assert refusal.status == 500
    assert "APIM_SHARED_SECRET" in refusal.message and "$apim-shared-secret" in refusal.message
    assert refused(vault_gate(vault), "/health", {}) is None


def test_an_unreachable_vault_refuses_with_503_and_a_known_secret_outlives_a_short_outage():
    vault = Vault(**{"apim-shared-secret": SECRET})
    vault.down = True
    refusal = refused(vault_gate(vault), "/v1/models", {HEADER: SECRET})
    assert isinstance(refusal, SecretStoreUnavailable) and refusal.status == 503
    now = [0.0]
    gate = vault_gate(vault, clock=lambda: now[0])
    vault.down = False
    assert refused(gate, "/v1/models", {HEADER: SECRET}) is None
    vault.down = True
    now[0] = 400.0  # past the TTL, within the stale period
    assert refused(gate, "/v1/models", {HEADER: SECRET}) is None


def test_an_instance_idle_past_the_ttl_takes_a_rotated_secret_on_the_first_request():
    vault = Vault(**{"apim-shared-secret": "old-secret-1b2c"})
    now = [0.0]
    gate = vault_gate(vault, clock=lambda: now[0])
    assert refused(gate, "/v1/models", {HEADER: "old-secret-1b2c"}) is None
    vault.secrets["apim-shared-secret"] = "new-secret-9f8e"
    now[0] = 301.0  # nobody called for longer than the TTL
    assert refused(gate, "/v1/models", {HEADER: "new-secret-9f8e"}) is None
    reads = vault.reads
    for _ in range(3):  # a wrong header costs no vault read while the secrets are fresh
        assert isinstance(refused(gate, "/v1/models", {HEADER: "old-secret-1b2c"}), ApiManagementRequired)
    assert vault.reads == reads


def rotate(skip_wait: str | None = None) -> tuple[list[str], list[str]]:
    """The rotation of the README ("Rotating the shared secret"), step by step,
    against three instances whose caches were filled at different moments.
    API Management sends the secret version its named value is pinned to, so it
    switches only at step 3. Returns the refusals of what API Management sent,
    and the instances that still take the old secret at the end."""
    ttl = 300.0
    old, new = "old-secret-0d8f1c", "new-secret-7a2e9b"
    # The previous secret of an earlier rotation whose last step was not done.
    vault = Vault(**{"apim-shared-secret": old, "apim-shared-secret-previous": "older-secret-51b7aa"})
    now = [-ttl]
    apim_sends = [old]
    instances = [vault_gate(vault, clock=lambda: now[0], ttl=ttl) for _ in range(3)]
    failures: list[str] = []

    def wait(seconds: float, step: str) -> None:
        until = now[0] + (10.0 if step == skip_wait else seconds)
        while now[0] < until:
            for number, instance in enumerate(instances):
                started = now[0] >= -ttl + number * 97  # instances fill their caches at different moments
                if started and refused(instance, "/v1/models", {HEADER: apim_sends[0]}) is not None:
                    failures.append(f"t={now[0]:.0f} instance {number}")
            now[0] += 10.0

    wait(ttl, "start")
    # 1. The previous secret takes the current value; wait SECRET_TTL_SECONDS.
    vault.secrets["apim-shared-secret-previous"] = vault.secrets["apim-shared-secret"]
    wait(ttl, "1")
    # 2. A new current secret; wait SECRET_TTL_SECONDS.
    vault.secrets["apim-shared-secret"] = new
    wait(ttl, "2")
    # 3. `azd provision` pins API Management's named value to the new version.
    apim_sends[0] = new
    wait(ttl, "3")
    # 4. The old secret is retired: the previous secret takes the new value.
    vault.secrets["apim-shared-secret-previous"] = new
    wait(ttl + 10.0, "4")
    old_still_passes = [
        f"instance {number}"
        for number, instance in enumerate(instances)
        if refused(instance, "/v1/models", {HEADER: old}) is None
    ]
    return failures, old_still_passes


def test_the_readme_rotation_steps_keep_every_instance_accepting_what_api_management_sends():
    failures, old_still_passes = rotate()
    assert not failures, failures
    assert not old_still_passes, old_still_passes


def test_api_management_must_not_switch_before_every_instance_knows_the_new_secret():
    """Without the wait after step 2, API Management sends the new secret
    while some instance still knows only the old one."""
    failures, _ = rotate(skip_wait="2")
    assert failures


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
    with running_gateway(directory, env) as process:
        yield process


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
