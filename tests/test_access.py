"""Project API keys, private models, and the key management CLI."""

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from shared.projects import hash_key
from tests.conftest import UPSTREAM_KEYS, azure_entry, gateway_env
from tests.support import PROJECT_DIR, key_document, running_gateway, write_catalog, write_projects

KEY_A = "sk-gw-team-a-key-0001"
KEY_B = "sk-gw-team-b-key-0002"
DISABLED_KEY = "sk-gw-disabled-0003"
EXPIRED_KEY = "sk-gw-expired-0004"
DATED_KEY = "sk-gw-dated-0005"
PAST_DATED_KEY = "sk-gw-past-dated-0006"
MALFORMED_EXPIRY_KEY = "sk-gw-malformed-expiry-0007"
USER = [{"role": "user", "content": "who am i"}]


@pytest.fixture(scope="module")
def secured(fake_azure, tmp_path_factory):
    directory = tmp_path_factory.mktemp("secured")
    now = datetime.now(UTC)
    yesterday = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    projects = write_projects(
        directory / "projects.json",
        {KEY_A: "team-a", KEY_B: "team-b"},
        key_document(DISABLED_KEY, "team-a", disabled=True),
        key_document(EXPIRED_KEY, "team-a", expires=yesterday),
        key_document(DATED_KEY, "team-a", expires=(now + timedelta(days=2)).date().isoformat()),
        key_document(PAST_DATED_KEY, "team-a", expires=(now - timedelta(days=2)).date().isoformat()),
        key_document(MALFORMED_EXPIRY_KEY, "team-a", expires="next tuesday"),
    )
    catalog = write_catalog(
        directory / "models.json",
        [
            azure_entry("shared-chat", "dep-b", fake_azure.url),
            azure_entry("team-a-chat", "dep-a", fake_azure.url, private=True, projects=["team-a"]),
        ],
    )
    env = gateway_env(ALLOW_ANONYMOUS="false", MODELS_FILE=str(catalog), PROJECTS_FILE=str(projects))
    with running_gateway(directory, env) as process:
        process.projects_file = projects
        yield process


@pytest.mark.parametrize("key", ["sk-gw-unknown", DISABLED_KEY, EXPIRED_KEY, PAST_DATED_KEY, MALFORMED_EXPIRY_KEY])
def test_bad_keys_are_refused_with_401(secured, key):
    with pytest.raises(openai.AuthenticationError) as caught:
        secured.client(key).chat.completions.create(model="shared-chat", messages=USER)
    assert caught.value.code == "invalid_api_key"
    assert caught.value.body["type"] == "authentication_error"


def test_a_key_expiring_on_a_date_works_until_that_date(secured):
    assert secured.client(DATED_KEY).chat.completions.create(model="shared-chat", messages=USER).choices


def test_a_malformed_expiry_is_logged_naming_the_key_by_its_hash_never_its_secret(secured):
    with pytest.raises(openai.AuthenticationError):
        secured.client(MALFORMED_EXPIRY_KEY).models.list()
    (line,) = [line for line in secured.log().splitlines() if "next tuesday" in line]
    assert hash_key(MALFORMED_EXPIRY_KEY) in line
    assert MALFORMED_EXPIRY_KEY not in secured.log()
    assert "refused: malformed expires" in admin(secured.projects_file, "list", "team-a")


def test_no_key_is_refused_everywhere_but_health(secured):
    for method, path in [("GET", "/v1/models"), ("GET", "/v1/models/shared-chat"), ("POST", "/v1/chat/completions")]:
        response = httpx.request(method, secured.url + path, json={"model": "shared-chat", "messages": USER})
        assert response.status_code == 401, path
        assert response.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{secured.url}/health").status_code == 200


def test_azure_style_api_key_header_is_accepted(secured):
    response = httpx.get(f"{secured.url}/v1/models", headers={"api-key": KEY_A})
    assert response.status_code == 200


def test_a_private_model_exists_only_for_its_projects(secured):
    team_a, team_b = secured.client(KEY_A), secured.client(KEY_B)

    assert "team-a-chat" in {m.id for m in team_a.models.list()}
    assert team_a.models.retrieve("team-a-chat").id == "team-a-chat"
    assert team_a.chat.completions.create(model="team-a-chat", messages=USER).model == "team-a-chat"

    assert "team-a-chat" not in {m.id for m in team_b.models.list()}
    with pytest.raises(openai.NotFoundError):
        team_b.models.retrieve("team-a-chat")
    with pytest.raises(openai.NotFoundError) as caught:
        team_b.chat.completions.create(model="team-a-chat", messages=USER)
    assert caught.value.code == "model_not_found"
    # Found by its code (the deployment name) is no way around it either.
    with pytest.raises(openai.NotFoundError):
        team_b.chat.completions.create(model="dep-a", messages=USER)


def test_the_callers_key_never_goes_upstream(secured, fake_azure):
    secured.client(KEY_A).chat.completions.create(model="team-a-chat", messages=USER)
    (upstream,) = fake_azure.requests
    assert KEY_A not in json.dumps(upstream.headers) + upstream.body.decode()


def test_mixed_projects_and_models_never_cross_keys(secured, fake_azure):
    clients = {
        key: openai.AsyncOpenAI(base_url=f"{secured.url}/v1", api_key=key, max_retries=0) for key in (KEY_A, KEY_B)
    }

    async def scenario():
        calls = []
        for i in range(100):
            calls.append(clients[KEY_A].chat.completions.create(model="team-a-chat", messages=USER))
            calls.append(clients[KEY_B if i % 2 else KEY_A].chat.completions.create(model="shared-chat", messages=USER))
        return await asyncio.gather(*calls)

    assert len(asyncio.run(scenario())) == 200
    for deployment, key in UPSTREAM_KEYS.items():
        assert {r.headers["api-key"] for r in fake_azure.requests_for(deployment)} == {key}
    assert len(fake_azure.requests_for("dep-a")) == 100


def admin(projects_file, *arguments):
    env = {"PROJECTS_FILE": str(projects_file), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "shared.admin", "keys", *arguments],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_cli_issued_keys_work_and_disabling_or_deleting_them_takes_effect(secured):
    assert "created project" in admin(secured.projects_file, "create-project", "team-cli", "--name", "CLI team")
    issued = admin(secured.projects_file, "issue", "team-cli", "--name", "laptop", "--expires-days", "30")
    key = issued.strip().splitlines()[-1]
    assert key.startswith("sk-gw-")
    assert key not in secured.projects_file.read_text()
    assert hash_key(key) in secured.projects_file.read_text()

    listing = admin(secured.projects_file, "list", "team-cli")
    assert "laptop" in listing and "active" in listing and key not in listing
    key_id = hash_key(key)[:12]

    assert secured.client(key).models.list().data
    admin(secured.projects_file, "disable", key_id)
    assert "disabled" in admin(secured.projects_file, "list", "team-cli")
    admin(secured.projects_file, "delete", key_id)
    assert key_id not in admin(secured.projects_file, "list")


def test_admin_cli_refuses_unknown_projects(secured):
    result = subprocess.run(
        [sys.executable, "-m", "shared.admin", "keys", "issue", "no-such-team"],
        cwd=PROJECT_DIR,
        env={"PROJECTS_FILE": str(secured.projects_file)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "no-such-team" in result.stderr


def test_no_key_appears_in_the_log(secured):
    secured.client(KEY_A).chat.completions.create(model="team-a-chat", messages=USER)
    with pytest.raises(openai.AuthenticationError):
        secured.client("sk-gw-wrong-secret").models.list()
    log = secured.log()
    assert "ALLOW_ANONYMOUS" not in log
    for secret in (KEY_A, KEY_B, "sk-gw-wrong-secret", *UPSTREAM_KEYS.values()):
        assert secret not in log
