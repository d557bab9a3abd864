"""Budgets and rate limits across gateway processes sharing one Cosmos DB: the stated bound under concurrency,
with the store slow, an instance killed holding reservations, and Cosmos frozen under "deny" and "allow"."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from shared.limits import LEASE_SECONDS, RENEW_SECONDS, SKEW_SECONDS
from shared.quota import prompt_tokens
from shared.settings import COSMOS_CONTAINERS, Settings
from tests.conftest import catalog_documents, gateway_env
from tests.fakes.cosmos_faults import Delay, FaultyCosmos
from tests.support import CosmosServer, GatewayProcess, key_document, running_gateway, skewed_clock_env

USER = [{"role": "user", "content": "count these words"}]
MAX_TOKENS = 10
#: The fake's answer to USER: prompt 3 words, completion 4.
CALL_COST = (3 * 0.0025 + 4 * 0.01) / 1000
USAGE = Settings().cosmos_usage_container_id
LIMITS = Settings().cosmos_limits_container_id


def worst(body: dict) -> tuple[int, float]:
    """The tokens and cost a call with `body` is reserved at (chat-a's prices)."""
    prompt, completion = prompt_tokens(body), body["max_tokens"]
    return prompt + completion, (prompt * 0.0025 + completion * 0.01) / 1000


CHAT_BODY = {"model": "chat-a", "messages": USER, "max_tokens": MAX_TOKENS}
CHAT_TOKENS, CHAT_WORST = worst(CHAT_BODY)


def key_of(project: str) -> str:
    return f"sk-gw-cosmos-limits-{project}"


def seed(server: CosmosServer, database: str, fake_url: str, projects: dict[str, dict | None]) -> None:
    documents = [
        {"id": project, "type": "project", "name": project} | ({"limits": limits} if limits else {})
        for project, limits in projects.items()
    ] + [key_document(key_of(project), project) for project in projects]
    server.seed(database, "models", "/id", catalog_documents(fake_url))
    server.seed(database, "projects", "/id", documents)
    server.seed(database, USAGE, COSMOS_CONTAINERS[USAGE], [])
    server.seed(database, LIMITS, COSMOS_CONTAINERS[LIMITS], [])


@contextmanager
def gateways(
    server: CosmosServer, database: str, directory: Path, count: int, each: list[dict] | None = None, **env: str
) -> Iterator[list]:
    """`count` gateways on the `database`, with the settings `env` (and the `index`th with `each[index]` too)."""
    with ExitStack() as stack:
        processes = []
        for index in range(count):
            place = directory / f"gateway-{index}"
            place.mkdir()
            own = each[index] if each else {}
            settings = gateway_env(ALLOW_ANONYMOUS="false", **(server.settings(database) | env | own))
            processes.append(stack.enter_context(running_gateway(place, settings)))
        yield processes


def records(server: CosmosServer, database: str, project: str, expected: int, timeout: float = 30.0) -> list[dict]:
    """The project's usage records in Cosmos, once `expected` of them are written."""
    from azure.cosmos import CosmosClient

    container = (
        CosmosClient(server.url, credential=CosmosServer.KEY, connection_verify=False)
        .get_database_client(database)
        .get_container_client(USAGE)
    )
    deadline = time.monotonic() + timeout
    while True:
        found = [
            item
            for item in container.query_items(
                "SELECT * FROM c WHERE c.project = @p",
                parameters=[{"name": "@p", "value": project}],
                enable_cross_partition_query=True,
            )
            if item["status"] == 200
        ]
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def client(gateway: GatewayProcess, project: str) -> openai.OpenAI:
    return gateway.client(key_of(project))


def call(gateway: GatewayProcess, project: str) -> str:
    """One chat call: "ok", or the code of the 429 or 503 refusing it."""
    try:
        client(gateway, project).chat.completions.create(model="chat-a", messages=USER, max_tokens=MAX_TOKENS)
    except (openai.RateLimitError, openai.InternalServerError) as error:
        return f"{error.status_code} {error.code}"
    return "ok"


def clock_offset(gateway: GatewayProcess) -> float:
    """How far ahead of this machine's the gateway's clock runs, as a call's x-ratelimit-reset-requests tells
    (seconds to the end of the gateway's minute): the project `clock` has a requests per minute limit."""
    before = time.time()
    answer = client(gateway, "clock").chat.completions.with_raw_response.create(**CHAT_BODY)
    real = (before + time.time()) / 2
    into_its_minute = -float(answer.headers["x-ratelimit-reset-requests"].rstrip("s")) % 60
    return (into_its_minute - real % 60 + 30) % 60 - 30


def test_concurrent_calls_on_three_instances_spend_the_budget_and_no_more(cosmos, fake_azure, tmp_path):
    budget = 0.004
    seed(
        cosmos,
        "limits-budget",
        fake_azure.url,
        {"spender": {"budget_usd": budget}, "clock": {"requests_per_minute": 1_000_000}},
    )
    # Their clocks differ by up to SKEW_SECONDS (one behind, one on time, one ahead).
    clocks = [-SKEW_SECONDS * 0.45, 0.0, SKEW_SECONDS * 0.45]
    each = [skewed_clock_env(seconds) for seconds in clocks]
    with gateways(cosmos, "limits-budget", tmp_path, 3, each=each) as processes:
        assert [clock_offset(process) for process in processes] == pytest.approx(clocks, abs=0.3)
        outcomes: Tally[str] = Tally()
        lock = threading.Lock()

        def worker(gateway: GatewayProcess) -> None:
            spend_until_refused(gateway, outcomes, lock, 90)

        with ThreadPoolExecutor(24) as pool:
            list(pool.map(worker, [processes[index % 3] for index in range(24)]))
        stored = records(cosmos, "limits-budget", "spender", outcomes["ok"])
        assert len(stored) == outcomes["ok"]
        spent = sum(record["cost"] for record in stored)
        # The bound: the underestimates (none: each reservation is a true upper bound) plus the slices of
        # instances lost (none here).
        assert spent <= budget + 1e-12
        # No phantom refusal: the budget was refused only once less than a call's worst case was left.
        assert spent > budget - CHAT_WORST
        # Once spent, every instance refuses, at once.
        assert [call(process, "spender") for process in processes] == ["429 insufficient_quota"] * 3


def spend_until_refused(gateway: GatewayProcess, outcomes: Tally[str], lock: threading.Lock, seconds: float) -> None:
    """Calls as "spender" until its budget is refused (at most `seconds`), each outcome tallied."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        outcome = call(gateway, "spender")
        with lock:
            outcomes[outcome] += 1
        if outcome == "429 insufficient_quota":
            return
        assert outcome in ("ok", "429 rate_limit_exceeded"), outcome


def test_a_slow_store_keeps_the_bound_and_leaves_projects_without_limits_alone(cosmos, fake_azure, tmp_path):
    """Every request to the limits container answered after 0.5 to 1.5 s. The store timeout is raised above
    the first use of a container (its properties, then the query: up to 3 s here), so the store is slow and
    never unavailable."""
    budget = 0.00075
    seed(cosmos, "limits-slow", fake_azure.url, {"spender": {"budget_usd": budget}, "plain": None})
    proxy = FaultyCosmos(cosmos.url).start()
    proxy.delay = Delay(0.5, 1.5, LIMITS)
    try:
        slow = {"COSMOS_URL": proxy.url, "STORE_TIMEOUT_SECONDS": "15"}
        with gateways(cosmos, "limits-slow", tmp_path, 2, **slow) as processes:
            for process in processes:  # the keys and the catalog cached: only the limits container is slow
                assert call(process, "plain") == "ok"
            outcomes: Tally[str] = Tally()
            plain_seconds: list[float] = []
            lock = threading.Lock()

            def spender(gateway: GatewayProcess) -> None:
                spend_until_refused(gateway, outcomes, lock, 240)

            def plain(gateway: GatewayProcess) -> None:
                while not outcomes["429 insufficient_quota"]:
                    started = time.monotonic()
                    assert call(gateway, "plain") == "ok"
                    plain_seconds.append(time.monotonic() - started)

            with ThreadPoolExecutor(14) as pool:
                watchers = [pool.submit(plain, process) for process in processes]
                list(pool.map(spender, [processes[index % 2] for index in range(12)]))
                for watcher in watchers:
                    watcher.result()
            stored = records(cosmos, "limits-slow", "spender", outcomes["ok"])
            assert len(stored) == outcomes["ok"]
            spent = sum(record["cost"] for record in stored)
            assert budget - CHAT_WORST < spent <= budget + 1e-12
            # A project without limits never waits for the limits store (each of its requests takes >= 0.5 s).
            assert plain_seconds and max(plain_seconds) < proxy.delay.low, max(plain_seconds)
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    ("limits", "measure"),
    [
        ({"requests_per_minute": 20}, lambda record: 1),
        ({"tokens_per_minute": 10 * CHAT_TOKENS}, lambda record: record["total_tokens"]),
    ],
    ids=["requests", "tokens"],
)
def test_rate_limits_hold_across_instances_per_minute(cosmos, fake_azure, tmp_path, limits, measure):
    database = f"limits-rate-{next(iter(limits))}"[:40]
    seed(cosmos, database, fake_azure.url, {"rated": limits})
    limit = next(iter(limits.values()))
    with gateways(cosmos, database, tmp_path, 3) as processes:
        with ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(lambda index: call(processes[index % 3], "rated"), range(90)))
        assert set(outcomes) <= {"ok", "429 rate_limit_exceeded"} and "429 rate_limit_exceeded" in outcomes
        stored = records(cosmos, database, "rated", outcomes.count("ok"))
    per_minute: Tally[str] = Tally()
    for record in stored:
        per_minute[record["timestamp"][:16]] += measure(record)
    assert max(per_minute.values()) <= limit


def test_a_killed_instance_s_reservations_are_spendable_again_within_the_lease(cosmos, fake_azure, tmp_path):
    stream_body = {"model": "slow-stream", "messages": USER, "max_tokens": 50, "stream": True}
    chat_body = CHAT_BODY | {"max_tokens": 50}
    # The gateway always asks for a stream's usage chunk: its body, so its estimate, carries that too.
    _, stream_worst = worst(stream_body | {"stream_options": {"include_usage": True}})
    _, chat_worst = worst(chat_body)
    budget = 4 * stream_worst + chat_worst / 2
    seed(cosmos, "limits-kill", fake_azure.url, {"held": {"budget_usd": budget}})
    with gateways(cosmos, "limits-kill", tmp_path, 2) as (doomed, survivor):
        started = threading.Barrier(5)

        def stream() -> None:
            try:
                with httpx.stream(
                    "POST",
                    f"{doomed.url}/v1/chat/completions",
                    json=stream_body,
                    headers={"Authorization": f"Bearer {key_of('held')}"},
                    timeout=60,
                ) as response:
                    assert response.status_code == 200, response.read()
                    lines = response.iter_lines()
                    next(lines)
                    started.wait()
                    for _ in lines:
                        pass
            except httpx.HTTPError:
                pass  # the instance was killed under it

        threads = [threading.Thread(target=stream) for _ in range(4)]
        for thread in threads:
            thread.start()
        started.wait(timeout=60)
        # The four streams reserve all but half a call of the budget: the other instance must wait.
        refused = survivor_call(survivor, chat_body)
        assert refused == "429 rate_limit_exceeded"
        os.kill(doomed.pid, signal.SIGKILL)
        killed = time.monotonic()
        while (outcome := survivor_call(survivor, chat_body)) != "ok":
            assert outcome == "429 rate_limit_exceeded"
            assert time.monotonic() - killed < LEASE_SECONDS + SKEW_SECONDS + 5, "the dead instance's hold stayed"
        assert time.monotonic() - killed <= LEASE_SECONDS + SKEW_SECONDS + RENEW_SECONDS
        for thread in threads:
            thread.join()
        deadline = time.monotonic() + 10
        while len(fake_azure.stream_outcomes) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake_azure.stream_outcomes == ["closed"] * 4  # the dead instance's upstream streams ended too


def survivor_call(gateway: GatewayProcess, body: dict) -> str:
    try:
        client(gateway, "held").chat.completions.create(**body)
    except openai.RateLimitError as error:
        return f"429 {error.code}"
    return "ok"


def test_cosmos_frozen_deny_refuses_allow_serves_and_others_are_untouched(fake_azure, tmp_path):
    server = CosmosServer().start()
    projects = {
        "denied": {"budget_usd": 1.0, "requests_per_minute": 10_000},
        "allowed": {"budget_usd": 1.0, "requests_per_minute": 10_000, "when_store_unavailable": "allow"},
        "plain": None,
    }
    try:
        seed(server, "limits-pause", fake_azure.url, projects)
        with gateways(server, "limits-pause", tmp_path, 1, STORE_TIMEOUT_SECONDS="1") as (gateway,):
            # A cold store may take longer than the 1 s timeout on a busy machine: a 503 before the pause
            # is not what this test is about, so each project is served once first.
            warm_by = time.monotonic() + 60
            for project in projects:
                while (outcome := call(gateway, project)) != "ok":
                    assert time.monotonic() < warm_by, outcome
            served_allowed = 1
            server.pause()
            paused = time.monotonic()
            try:
                # "deny": served from the lease the instance holds, then 503 once it lapses.
                while (outcome := call(gateway, "denied")) == "ok":
                    assert call(gateway, "plain") == "ok"
                    assert call(gateway, "allowed") == "ok"
                    served_allowed += 1
                    assert time.monotonic() - paused < LEASE_SECONDS + 5
                assert outcome == "503 limits_store_unavailable"
                assert time.monotonic() - paused <= LEASE_SECONDS - SKEW_SECONDS + 2 * RENEW_SECONDS + 1
                for _ in range(3):
                    assert call(gateway, "denied") == "503 limits_store_unavailable"
                    assert call(gateway, "plain") == "ok"
                    assert call(gateway, "allowed") == "ok"
                    served_allowed += 1
            finally:
                server.resume()
            # Back: "deny" serves again, and "allow" has reconciled what it spent while the store was away.
            while call(gateway, "denied") != "ok":
                assert time.monotonic() - paused < 60
            stored = records(server, "limits-pause", "allowed", served_allowed)
            assert len(stored) == served_allowed
            assert reported(gateway, "allowed")["spent"] == pytest.approx(served_allowed * CALL_COST)
            # The instance flushed it into the shared counter (within a renewal).
            deadline = time.monotonic() + 2 * RENEW_SECONDS + 5
            while (flushed := counter_spent(server, "project:allowed")) != pytest.approx(served_allowed * CALL_COST):
                assert time.monotonic() < deadline, flushed
                time.sleep(0.1)
    finally:
        server.stop()


def counter_spent(server: CosmosServer, scope: str) -> float:
    """The `spent` of the scope's budget counter for this month, as Cosmos holds it."""
    from azure.cosmos import CosmosClient

    container = (
        CosmosClient(server.url, credential=CosmosServer.KEY, connection_verify=False)
        .get_database_client("limits-pause")
        .get_container_client(LIMITS)
    )
    key = f"{scope}|budget|{time.strftime('%Y-%m', time.gmtime())}"
    items = list(
        container.query_items(
            "SELECT * FROM c WHERE c.id = @id", parameters=[{"name": "@id", "value": key}], partition_key=key
        )
    )
    return items[0]["spent"] if items else 0.0


def reported(gateway: GatewayProcess, project: str) -> dict:
    response = httpx.get(f"{gateway.url}/v1/limits", headers={"Authorization": f"Bearer {key_of(project)}"})
    assert response.status_code == 200, response.text
    return next(row for row in response.json()["data"] if row["limit"] == "budget")
