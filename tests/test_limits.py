"""Budgets and rate limits in one gateway process (file mode): refusals an OpenAI SDK understands, headers,
settlement of streams and failures, the report, the admin API and the CLI."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from shared.quota import prompt_tokens
from tests.conftest import catalog_documents, gateway_env
from tests.openapi import assert_conforms
from tests.support import admin_cli, key_document, running_gateway, skewed_clock_env, write_catalog

ADMIN_KEY = "sk-gw-limits-admin-0001"
USER = [{"role": "user", "content": "count these words"}]
#: The fake's answer to USER: prompt 3 words, completion 4 ("echo: count these words").
CALL_COST = (3 * 0.0025 + 4 * 0.01) / 1000
MAX_TOKENS = 10


def worst_cost(messages=USER, max_tokens=MAX_TOKENS, **extra) -> float:
    body = {"model": "chat-a", "messages": messages, "max_tokens": max_tokens} | extra
    return (prompt_tokens(body) * 0.0025 + max_tokens * 0.01) / 1000


PROJECTS = {
    # project id -> its limits
    "budget": {"budget_usd": 10 * worst_cost()},
    "rpm": {"requests_per_minute": 3},
    "tpm": {"tokens_per_minute": 3 * (prompt_tokens({"model": "chat-a", "messages": USER, "max_tokens": 10}) + 10)},
    "stream": {"budget_usd": 1.0, "tokens_per_minute": 1_000_000},
    "keyed": {"budget_usd": 1.0},
    "plain": None,
}
KEYS = {f"sk-gw-limits-{project}-0001": project for project in PROJECTS} | {ADMIN_KEY: "platform"}
KEYED_KEY = "sk-gw-limits-keyed-key-0002"


def documents() -> list[dict]:
    projects = [
        {"id": project, "type": "project", "name": project} | ({"limits": limits} if limits else {})
        for project, limits in PROJECTS.items()
    ] + [{"id": "platform", "type": "project", "name": "platform", "admin": True}]
    keys = [key_document(key, project) for key, project in KEYS.items()]
    keys.append(key_document(KEYED_KEY, "keyed", limits={"requests_per_minute": 1}))
    return projects + keys


def key_of(project: str) -> str:
    return f"sk-gw-limits-{project}-0001"


@pytest.fixture(scope="module")
def limited(fake_azure, tmp_path_factory):
    directory = tmp_path_factory.mktemp("limits")
    (directory / "projects.json").write_text(json.dumps(documents()))
    catalog = write_catalog(directory / "models.json", catalog_documents(fake_azure.url))
    env = gateway_env(ALLOW_ANONYMOUS="false", MODELS_FILE=str(catalog), PROJECTS_FILE=str(directory / "projects.json"))
    with running_gateway(directory, env) as process:
        yield process


def counting_client(gateway, key: str, max_retries: int) -> tuple[openai.OpenAI, list[httpx.Request]]:
    """An openai client that retries as the SDK does by default, and the requests it sent."""
    sent: list[httpx.Request] = []
    http = httpx.Client(event_hooks={"request": [sent.append]})
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=max_retries, http_client=http)
    return client, sent


def chat(client: openai.OpenAI, **extra):
    return client.chat.completions.with_raw_response.create(
        model="chat-a", messages=USER, max_tokens=MAX_TOKENS, **extra
    )


def limits_report(gateway, key: str) -> dict:
    response = httpx.get(f"{gateway.url}/v1/limits", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()


def row(report: dict, limit: str, scope: str | None = None) -> dict:
    return next(r for r in report["data"] if r["limit"] == limit and (scope is None or r["scope"] == scope))


def test_an_exhausted_budget_is_insufficient_quota_and_the_sdk_does_not_retry(limited):
    client, sent = counting_client(limited, key_of("budget"), max_retries=3)
    served = 0
    with pytest.raises(openai.RateLimitError) as refused:
        for _ in range(200):
            chat(client)
            served += 1
    error = refused.value
    assert error.status_code == 429 and error.code == "insufficient_quota"
    assert error.body["type"] == "insufficient_quota"
    assert "resets at" in error.body["message"] and "project:budget" in error.body["message"]
    assert error.response.headers["x-should-retry"] == "false"
    assert len(sent) == served + 1, "the SDK must not retry an exhausted budget"
    # Each call reserved its worst case and was settled at its cost: it ends where a worst case no longer fits.
    budget = PROJECTS["budget"]["budget_usd"]
    assert served * CALL_COST <= budget < served * CALL_COST + worst_cost() + 1e-12
    spent = row(limits_report(limited, key_of("budget")), "budget")
    assert spent["spent"] == pytest.approx(served * CALL_COST)
    assert spent["reserved"] == 0 and spent["max"] == budget
    assert spent["resets_at"].endswith("-01T00:00:00Z")


def within_one_minute(attempt):
    """Run `attempt` until one run starts and ends in the same UTC minute (fixed windows); its result."""
    for _ in range(3):
        started = time.gmtime().tm_min
        result = attempt()
        if time.gmtime().tm_min == started:
            return result
    raise AssertionError("three runs crossed a minute boundary")


def test_requests_per_minute_answers_rate_limit_exceeded_with_openai_headers(limited):
    def attempt():
        client, _ = counting_client(limited, key_of("rpm"), max_retries=0)
        answers = []
        for _ in range(5):
            try:
                answers.append(chat(client))
            except openai.RateLimitError as error:
                answers.append(error)
        return answers

    answers = within_one_minute(attempt)
    refusals = [a for a in answers if isinstance(a, openai.RateLimitError)]
    assert len(answers) - len(refusals) <= 3 and refusals
    first = answers[0]
    assert not isinstance(first, Exception)
    assert first.headers["x-ratelimit-limit-requests"] == "3"
    assert int(first.headers["x-ratelimit-remaining-requests"]) <= 2
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    refusal = refusals[-1]
    assert refusal.code == "rate_limit_exceeded" and refusal.body["type"] == "requests"
    assert 1 <= int(refusal.response.headers["retry-after"]) <= 60
    assert refusal.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-should-retry" not in refusal.response.headers
    assert_conforms("ErrorResponse", refusal.response.json())


def test_tokens_per_minute_counts_each_call_at_its_worst_case_until_it_ends(limited):
    def attempt():
        client, _ = counting_client(limited, key_of("tpm"), max_retries=0)
        outcomes = []
        for _ in range(60):
            try:
                outcomes.append(int(chat(client).headers["x-ratelimit-remaining-tokens"]))
            except openai.RateLimitError as error:
                outcomes.append(error)
        return outcomes

    outcomes = within_one_minute(attempt)
    served = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if not isinstance(o, int)]
    # The limit is three worst cases; each call costs 7 tokens once settled, so more than three fit,
    # until what is left is less than a worst case.
    assert len(served) > 3 and refused
    worst = PROJECTS["tpm"]["tokens_per_minute"] // 3
    assert served[-1] - 7 < worst <= served[-1] + 7
    assert served == sorted(served, reverse=True)
    assert refused[0].code == "rate_limit_exceeded" and refused[0].body["type"] == "tokens"


def test_a_call_larger_than_the_whole_limit_is_refused_once_and_not_retried(limited):
    client, sent = counting_client(limited, key_of("tpm"), max_retries=2)
    limit = PROJECTS["tpm"]["tokens_per_minute"]
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="chat-a", messages=USER, max_tokens=limit)
    error = refused.value
    assert error.code == "rate_limit_exceeded" and error.body["type"] == "tokens"
    assert f"more than the limit of {limit}" in error.body["message"]
    assert error.response.headers["x-should-retry"] == "false"
    assert len(sent) == 1, "no retry can fit a call whose worst case exceeds the whole limit"


def test_a_key_s_limits_apply_in_addition_to_its_project_s(limited):
    def attempt():
        client, _ = counting_client(limited, KEYED_KEY, max_retries=0)
        first = chat(client)
        with pytest.raises(openai.RateLimitError) as refused:
            chat(client)
        return first, refused.value

    first, refused = within_one_minute(attempt)
    assert first.headers["x-ratelimit-limit-requests"] == "1"
    assert refused.body["type"] == "requests" and "key:" in refused.body["message"]
    # The project's other key has only the project's budget.
    other, _ = counting_client(limited, key_of("keyed"), max_retries=0)
    assert "x-ratelimit-limit-requests" not in chat(other).headers
    scopes = {r["scope"] for r in limits_report(limited, KEYED_KEY)["data"]}
    assert scopes == {"project:keyed", next(s for s in scopes if s.startswith("key:"))} and len(scopes) == 2


def test_a_caller_that_hangs_up_mid_stream_is_charged_what_it_received(limited, fake_azure):
    key = key_of("stream")
    before = row(limits_report(limited, key), "budget")["spent"]
    received = 0
    body = {"model": "slow-stream", "messages": USER, "stream": True, "max_tokens": 50}
    with httpx.stream(
        "POST",
        f"{limited.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}", "x-request-id": "lim-gone"},
    ) as response:
        assert response.headers["x-ratelimit-limit-tokens"] == "1000000"
        for line in response.iter_lines():
            if line.startswith("data: "):
                received += 1
            if "w2" in line:
                break
    record = limited.usage_record("lim-gone")
    deadline = time.monotonic() + 5
    while "closed" not in fake_azure.stream_outcomes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_azure.stream_outcomes == ["closed"]  # the upstream stream was cancelled too
    assert record["status"] == 499
    assert record["completion_tokens"] == received
    assert record["prompt_tokens"] == prompt_tokens(body | {"stream_options": {"include_usage": True}})
    deadline = time.monotonic() + 10
    while (now := row(limits_report(limited, key), "budget"))["reserved"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert now["spent"] - before == pytest.approx(record["cost"]) and now["reserved"] == 0


def test_a_failed_upstream_call_is_charged_nothing(limited):
    key = key_of("stream")
    client, _ = counting_client(limited, key, max_retries=0)
    before = row(limits_report(limited, key), "budget")
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="broken", messages=USER, max_tokens=MAX_TOKENS)
    assert failed.value.response.headers["x-ratelimit-limit-tokens"] == "1000000"
    after = row(limits_report(limited, key), "budget")
    assert after["spent"] == before["spent"] and after["reserved"] == 0


def test_a_project_without_limits_gets_no_limit_headers(limited):
    client, _ = counting_client(limited, key_of("plain"), max_retries=0)
    answer = chat(client)
    assert not [name for name in answer.headers if name.startswith("x-ratelimit")]
    assert limits_report(limited, key_of("plain"))["data"] == []


def admin(gateway, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{gateway.url}{path}", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, **kwargs)


@pytest.mark.parametrize(
    ("limits", "param"),
    [
        ({"budget_usd": -1}, "limits.budget_usd"),
        ({"budget_period": "week"}, "limits.budget_period"),
        ({"tokens_per_minute": 1.5}, "limits.tokens_per_minute"),
        ({"requests_per_minute": "600"}, "limits.requests_per_minute"),
        ({"when_store_unavailable": "maybe"}, "limits.when_store_unavailable"),
        ({"budget": 5}, "limits.budget"),
        ({"budget_usd": True}, "limits.budget_usd"),
    ],
)
def test_the_admin_api_refuses_invalid_limits_naming_the_field(limited, limits, param):
    response = admin(limited, "PUT", "/v1/admin/projects/plain/limits", json=limits)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_the_admin_api_sets_reads_and_clears_a_project_s_limits(limited):
    path = "/v1/admin/projects/rpm/limits"
    assert admin(limited, "GET", path).json()["data"][0]["max"] == 3
    assert httpx.get(f"{limited.url}{path}", headers={"Authorization": f"Bearer {key_of('rpm')}"}).status_code == 403
    assert admin(limited, "GET", "/v1/admin/projects/nobody/limits").status_code == 404
    stored = admin(limited, "PUT", path, json={"requests_per_minute": 5, "when_store_unavailable": "allow"})
    assert stored.status_code == 200
    assert stored.json()["limits"] == {"requests_per_minute": 5, "when_store_unavailable": "allow"}
    assert admin(limited, "GET", path).json()["data"][0]["max"] == 5
    assert admin(limited, "DELETE", path).json()["limits"] is None
    assert admin(limited, "GET", path).json()["data"] == []
    assert admin(limited, "PUT", path, json=PROJECTS["rpm"]).status_code == 200


def test_the_admin_api_sets_and_clears_a_key_s_limits(limited):
    key_id = key_document(key_of("plain"), "plain")["id"][4:16]
    path = f"/v1/admin/projects/plain/limits?key={key_id[:8]}"
    stored = admin(limited, "PUT", path, json={"requests_per_minute": 7})
    assert stored.status_code == 200 and stored.json()["limits"] == {
        "requests_per_minute": 7,
        "when_store_unavailable": "deny",
    }
    rows = admin(limited, "GET", "/v1/admin/projects/plain/limits").json()["data"]
    assert [(r["scope"], r["limit"], r["max"]) for r in rows] == [(f"key:{key_id}", "requests", 7)]
    assert admin(limited, "DELETE", path).json()["limits"] is None
    assert admin(limited, "GET", "/v1/admin/projects/plain/limits").json()["data"] == []
    refused = admin(limited, "PUT", "/v1/admin/projects/plain/limits?key=zzzz", json={"requests_per_minute": 7})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "key"


def test_the_cli_sets_shows_and_clears_limits(tmp_path):
    projects = tmp_path / "projects.json"
    projects.write_text(
        json.dumps([{"id": "team", "type": "project", "name": "team"}, key_document("sk-gw-x", "team")])
    )
    env = {"PROJECTS_FILE": str(projects), "MODELS_FILE": str(tmp_path / "models.json")}
    admin_cli(
        env, "limits", "set", "team", "--budget-usd", "500", "--budget-period", "day", "--requests-per-minute", "600"
    )
    stored = {d["id"]: d for d in json.loads(projects.read_text())}
    assert stored["team"]["limits"] == {
        "budget_usd": 500.0,
        "budget_period": "day",
        "requests_per_minute": 600,
        "when_store_unavailable": "deny",
    }
    key_id = key_document("sk-gw-x", "team")["id"][4:16]
    admin_cli(env, "limits", "set", "team", "--key", key_id, "--tokens-per-minute", "1000")
    shown = admin_cli(env, "limits", "show", "team").stdout
    assert "project:team" in shown and f"key:{key_id}" in shown and '"tokens_per_minute": 1000' in shown
    refused = admin_cli(env, "limits", "set", "team", "--budget-usd", "-5", check=False)
    assert refused.returncode == 1 and "limits.budget_usd" in refused.stderr
    admin_cli(env, "limits", "clear", "team")
    assert "limits" not in {d["id"]: d for d in json.loads(projects.read_text())}["team"]


def test_calls_sharing_a_caller_s_request_id_are_each_reserved_and_charged(limited):
    """The request id is the caller's to choose: two calls in flight with the same one are two reservations."""
    key = key_of("stream")
    headers = {"Authorization": f"Bearer {key}", "x-request-id": "lim-twice"}
    before = row(limits_report(limited, key), "budget")["spent"]
    body = {"model": "slow-stream", "messages": USER, "stream": True, "max_tokens": 50}
    with httpx.stream("POST", f"{limited.url}/v1/chat/completions", json=body, headers=headers) as streamed:
        assert streamed.status_code == 200  # admitted: its worst case is reserved while it streams
        whole = httpx.post(f"{limited.url}/v1/chat/completions", json=body | {"stream": False}, headers=headers)
        assert whole.status_code == 200
        for _ in streamed.iter_lines():
            pass
    deadline = time.monotonic() + 10
    while len(records := [r for r in limited.usage_records() if r["request_id"] == "lim-twice"]) < 2:
        assert time.monotonic() < deadline, "no usage records for both calls"
        time.sleep(0.05)
    while (now := row(limits_report(limited, key), "budget"))["reserved"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert now["reserved"] == 0
    assert now["spent"] - before == pytest.approx(sum(r["cost"] for r in records))


AUDIO = ("hello.wav", b"RIFF....WAVEfmt ", "audio/wav")
OPERATIONS = {
    "completions": lambda c: c.completions.with_raw_response.create(model="instruct", prompt="hi", max_tokens=5),
    "completions stream": lambda c: c.completions.with_raw_response.create(
        model="instruct", prompt="hi", max_tokens=5, stream=True
    ),
    "responses": lambda c: c.responses.with_raw_response.create(model="responses-model", input="hi"),
    "responses stream": lambda c: c.responses.with_raw_response.create(
        model="responses-model", input="hi", stream=True
    ),
    "embeddings": lambda c: c.embeddings.with_raw_response.create(model="embed-only", input="hi"),
    "images": lambda c: c.images.with_raw_response.generate(model="image-model", prompt="a cat"),
    "speech": lambda c: c.audio.speech.with_raw_response.create(model="tts-model", voice="alloy", input="hi"),
    "transcriptions": lambda c: c.audio.transcriptions.with_raw_response.create(model="stt-model", file=AUDIO),
    "translations": lambda c: c.audio.translations.with_raw_response.create(model="translator", file=AUDIO),
}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_operation_is_admitted_with_headers_and_settled_at_its_cost(limited, operation):
    key = key_of("stream")
    client, _ = counting_client(limited, key, max_retries=0)
    before = row(limits_report(limited, key), "budget")["spent"]
    request_id = f"lim-{operation.replace(' ', '-')}"
    answer = OPERATIONS[operation](client.with_options(default_headers={"x-request-id": request_id}))
    assert answer.headers["x-ratelimit-limit-tokens"] == "1000000"
    parsed = answer.parse()
    if operation.endswith("stream"):
        list(parsed)  # read to its end
    record = limited.usage_record(request_id)
    deadline = time.monotonic() + 10
    while (now := row(limits_report(limited, key), "budget"))["reserved"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert now["reserved"] == 0 and now["spent"] - before == pytest.approx(record["cost"])


def test_a_spent_daily_budget_is_whole_again_once_the_utc_day_rolls_over(fake_azure, tmp_path):
    """A gateway whose clock reads a few seconds before midnight (tests/fakes/skewed_clock)."""
    key = "sk-gw-limits-daily-0001"
    budget = 2.5 * worst_cost()
    (tmp_path / "projects.json").write_text(
        json.dumps(
            [
                {
                    "id": "daily",
                    "type": "project",
                    "name": "daily",
                    "limits": {"budget_usd": budget, "budget_period": "day"},
                },
                key_document(key, "daily"),
            ]
        )
    )
    catalog = write_catalog(tmp_path / "models.json", catalog_documents(fake_azure.url))
    now = time.time()
    midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    ahead = midnight.timestamp() - now - 10  # its clock: 10 s before midnight when it starts
    env = gateway_env(ALLOW_ANONYMOUS="false", MODELS_FILE=str(catalog), PROJECTS_FILE=str(tmp_path / "projects.json"))
    with running_gateway(tmp_path, env | skewed_clock_env(ahead)) as gateway:
        client, _ = counting_client(gateway, key, max_retries=0)
        with pytest.raises(openai.RateLimitError) as refused:
            for _ in range(100):
                chat(client)
        assert refused.value.code == "insufficient_quota"
        day = midnight - timedelta(days=1)
        assert f"for {day:%Y-%m-%d}" in refused.value.body["message"]
        assert f"resets at {midnight:%Y-%m-%dT%H:%M:%SZ}" in refused.value.body["message"]
        deadline = time.monotonic() + 30
        while True:  # until the gateway's clock passes midnight
            try:
                chat(client)
                break
            except openai.RateLimitError as error:
                assert error.code == "insufficient_quota" and time.monotonic() < deadline
                time.sleep(0.2)
        fresh = row(limits_report(gateway, key), "budget")
        assert fresh["window"] == f"{midnight:%Y-%m-%d}" and fresh["spent"] == pytest.approx(CALL_COST)
