"""Every upstream attempt has a connect budget and a first-byte budget: a
deployment that never completes the TCP handshake, or accepts and never
answers, is given up on when its budget runs out, and the next one answers.

The endpoints are real loopback sockets: a listener whose accept queue is full
(the kernel drops every further SYN, as a firewall that drops packets does),
and a listener nobody accepts from (the kernel completes the handshake and
buffers the request; nothing ever answers).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ACCOUNT_ONE, API_VERSION, azure_entry, gateway_env, vertex_entry
from tests.fakes.google_oauth import make_service_account
from tests.support import GatewayProcess, running_gateway, write_catalog

USER = [{"role": "user", "content": "hello there"}]
CONNECT_SECONDS = 0.5
#: Far enough above the connect budget that a test can tell which one fired.
FIRST_BYTE_SECONDS = 3.0


@pytest.fixture(scope="module")
def black_hole() -> Iterator[str]:
    """The URL of a loopback port whose TCP handshake never completes."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    address = listener.getsockname()
    held = []
    for _ in range(16):
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(address)
        except TimeoutError:
            probe.close()
            break
        held.append(probe)  # queued, never accepted: the queue fills up
    else:
        pytest.fail("the loopback listener kept completing handshakes")
    assert accept_queue_overflowing(address[1]), "the kernel still has room for a handshake"
    yield f"http://{address[0]}:{address[1]}"
    for sock in (*held, listener):
        sock.close()


def accept_queue_overflowing(port: int) -> bool:
    """Whether Linux drops SYNs to the listener on `port`: its accept queue holds more than its
    backlog (for a listener, /proc/net/tcp's tx_queue:rx_queue is backlog:queued)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            backlog, queued = (int(value, 16) for value in fields[4].split(":"))
            return queued > backlog
    return False


@pytest.fixture(scope="module")
def silent() -> Iterator[str]:
    """The URL of a loopback port that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    host, port = listener.getsockname()
    yield f"http://{host}:{port}"
    listener.close()


@pytest.fixture(scope="module")
def budgeted(black_hole, silent, fake_azure, google, tmp_path_factory) -> Iterator[GatewayProcess]:
    oauth, vertex = google
    account = make_service_account(oauth.token_uri(oauth.url), ACCOUNT_ONE, "proj-one")

    def azure(model_id: str, dead_end: str, **extra: object) -> dict:
        dead, healthy = (
            {"name": name, "code": "dep-a", "priority": priority, "parameters": {"endpoint": url}}
            for name, url, priority in (("dead-end", dead_end, 0), ("healthy", fake_azure.url, 1))
        )
        return azure_entry(model_id, "dep-a", fake_azure.url, deployments=[dead, healthy], **extra)

    def gemini(model_id: str, dead_end: str) -> dict:
        dead, healthy = (
            {"name": name, "priority": priority, "parameters": {"api_base": url}}
            for name, url, priority in (("dead-end", dead_end, 0), ("healthy", vertex.url, 1))
        )
        return vertex_entry(model_id, "GoogleVertex", "gemini-2.0-flash", vertex.url) | {"deployments": [dead, healthy]}

    catalog = [
        azure_entry("ready", "dep-a", fake_azure.url),
        vertex_entry("gemini-ready", "GoogleVertex", "gemini-2.0-flash", vertex.url),
        azure("relay-black-hole", black_hole),
        azure("relay-silent", silent),
        azure("responses-black-hole", black_hole, operations=["Responses"]),  # Azure through LiteLLM
        gemini("gemini-black-hole", black_hole),
        gemini("gemini-silent", silent),
        azure_entry(
            "nowhere-to-go",
            "dep-a",
            black_hole,
            parameters={"endpoint": black_hole, "api_version": API_VERSION, "api_key": "$KEY_A"},
        ),
    ]
    directory = tmp_path_factory.mktemp("budgets")
    env = gateway_env(
        MODELS_FILE=str(write_catalog(directory / "models.json", catalog)),
        GOOGLE_SA_ONE=json.dumps(account),
        UPSTREAM_CONNECT_SECONDS=str(CONNECT_SECONDS),
        UPSTREAM_FIRST_BYTE_SECONDS=str(FIRST_BYTE_SECONDS),
        STREAM_FIRST_BYTE_TIMEOUT_SECONDS="10",
        REQUEST_TIMEOUT_SECONDS="15",
    )
    with running_gateway(directory, env) as process:
        process.wait_until_answering("ready")
        process.wait_until_answering("gemini-ready")  # LiteLLM is loaded: the timings below are the budgets'
        yield process


def timed_chat(gateway: GatewayProcess, model: str, **extra: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json={"model": model, "messages": USER} | extra, timeout=30
    )
    return response, time.monotonic() - started


@pytest.mark.parametrize("model", ["relay-black-hole", "gemini-black-hole"])
def test_a_deployment_that_never_completes_the_handshake_is_left_after_the_connect_budget(budgeted, model):
    response, elapsed = timed_chat(budgeted, model)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]
    assert CONNECT_SECONDS <= elapsed < CONNECT_SECONDS + 1.5


def test_an_azure_call_through_litellm_moves_on_after_the_connect_budget(budgeted, fake_azure):
    started = time.monotonic()
    response = httpx.post(
        f"{budgeted.url}/v1/responses", json={"model": "responses-black-hole", "input": "hello there"}, timeout=30
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "responses-black-hole"
    assert CONNECT_SECONDS <= elapsed < CONNECT_SECONDS + 1.5
    assert len(fake_azure.requests_for("dep-a")) == 1


def test_a_relayed_stream_moves_on_after_the_connect_budget_too(budgeted, fake_azure):
    started = time.monotonic()
    with httpx.stream(
        "POST",
        f"{budgeted.url}/v1/chat/completions",
        json={"model": "relay-black-hole", "messages": USER, "stream": True},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        first_chunk = next(line for line in response.iter_lines() if line.startswith("data: {"))
    assert json.loads(first_chunk[6:])["model"] == "relay-black-hole"
    assert time.monotonic() - started < CONNECT_SECONDS + 1.5
    assert len(fake_azure.requests_for("dep-a")) == 1


@pytest.mark.parametrize("model", ["relay-silent", "gemini-silent"])
def test_a_deployment_that_accepts_and_never_answers_is_left_after_the_first_byte_budget(budgeted, model):
    response, elapsed = timed_chat(budgeted, model)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]
    assert FIRST_BYTE_SECONDS <= elapsed < FIRST_BYTE_SECONDS + 1.5


def test_with_nowhere_else_to_go_the_budget_is_a_504(budgeted):
    response, elapsed = timed_chat(budgeted, "nowhere-to-go")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"
    assert elapsed < CONNECT_SECONDS + 1.5
