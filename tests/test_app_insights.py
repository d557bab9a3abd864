"""Export to Application Insights: a gateway whose connection string points at
a local stand-in for the ingestion endpoint sends request, dependency and
metric envelopes there; a collector that is down costs the caller nothing;
with no connection string nothing of the exporter is imported; spans go to the
gateway's own exporter, with no other processor on their way."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.conftest import UPSTREAM_KEYS, azure_entry, gateway_env
from tests.fakes.app_insights import FakeIngestion
from tests.fakes.server import free_port
from tests.support import PROJECT_DIR, GatewayProcess, running_gateway, write_catalog

PROMPT = "turquoise walrus sings opera"
CALLER_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE_ID}-b7ad6b7169203331-01"

#: Export quickly, keep every trace (the distro's default sampler keeps about 5
#: spans a second, so which trace it keeps depends on timing), and keep the
#: exporter's own usage statistics and remote configuration off the network.
FAST_EXPORT = {
    "OTEL_TRACES_SAMPLER": "always_on",
    "OTEL_BSP_SCHEDULE_DELAY": "200",
    "OTEL_METRIC_EXPORT_INTERVAL": "500",
    "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
    "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
    "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
}


def connection_string(endpoint: str) -> str:
    # A new instrumentation key per gateway: the exporter keeps unsent telemetry on disk per key.
    return f"InstrumentationKey={uuid.uuid4()};IngestionEndpoint={endpoint}/"


def catalog(directory, fake_url):
    shipped = json.loads((PROJECT_DIR / "models.json").read_text())
    return write_catalog(directory / "models.json", [*shipped, azure_entry("chat-a", "dep-a", fake_url)])


@pytest.fixture(scope="module")
def exporting(ingestion, fake_azure, tmp_path_factory):
    directory = tmp_path_factory.mktemp("app-insights")
    env = gateway_env(
        MODELS_FILE=str(catalog(directory, fake_azure.url)),
        APPLICATIONINSIGHTS_CONNECTION_STRING=connection_string(ingestion.url),
        **FAST_EXPORT,
    )
    with running_gateway(directory, env) as process:
        yield process


def eventually(
    find: Callable[[], Any], what: str, ingestion: FakeIngestion, gateway: GatewayProcess, timeout: float = 90.0
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"never received {what}; received {ingestion.summary()}; gateway log: {gateway.log()[-3000:]}")


def exported_call(ingestion: FakeIngestion, gateway: GatewayProcess, request_id: str) -> tuple[Any, Any]:
    """The request envelope of the caller's request `request_id` (its `x-request-id`),
    and the one dependency envelope under it, once both have arrived."""

    def request_envelope():
        return [
            e
            for e in ingestion.of_type("RequestData")
            if e["data"]["baseData"].get("properties", {}).get("gateway.request_id") == request_id
        ]

    [request] = eventually(request_envelope, "the request envelope", ingestion, gateway)
    parent = request["data"]["baseData"]["id"]

    def dependency_envelope():
        return [
            e for e in ingestion.of_type("RemoteDependencyData") if e["tags"].get("ai.operation.parentId") == parent
        ]

    [dependency] = eventually(dependency_envelope, "the dependency envelope under the request", ingestion, gateway)
    return request, dependency


def test_a_request_and_its_provider_call_arrive_as_one_transaction(exporting, ingestion):
    client = openai.OpenAI(
        base_url=f"{exporting.url}/v1",
        api_key="local",
        max_retries=0,
        default_headers={"traceparent": CALLER_TRACEPARENT, "x-request-id": "ai-chat"},
    )
    reply = client.chat.completions.create(model="chat-a", messages=[{"role": "user", "content": PROMPT}])

    request, dependency = exported_call(ingestion, exporting, "ai-chat")
    assert request["tags"]["ai.operation.id"] == CALLER_TRACE_ID
    assert request["data"]["baseData"]["responseCode"] == "200"
    properties = dependency["data"]["baseData"]["properties"]
    assert dependency["tags"]["ai.operation.id"] == CALLER_TRACE_ID
    assert dependency["data"]["baseData"]["name"] == "chat dep-a"
    assert properties["gen_ai.provider.name"] == "azure.ai.openai"
    assert properties["gen_ai.usage.input_tokens"] == str(reply.usage.prompt_tokens)
    assert properties["gen_ai.usage.output_tokens"] == str(reply.usage.completion_tokens)

    def token_metric():
        return [
            e
            for e in ingestion.of_type("MetricData")
            for metric in e["data"]["baseData"]["metrics"]
            if metric["name"] == "gen_ai.client.token.usage"
            if e["data"]["baseData"]["properties"].get("gateway.model") == "chat-a"
        ]

    [metric, *_] = eventually(token_metric, "gen_ai.client.token.usage for chat-a", ingestion, exporting)
    assert metric["data"]["baseData"]["properties"]["gateway.project"] == "anonymous"

    assert not ingestion.of_type("MessageData")  # logs stay with the Functions host
    sent = b"".join(ingestion.raw)
    for private in (PROMPT, "turquoise", *UPSTREAM_KEYS.values()):
        assert private.encode() not in sent


def test_the_mock_model_is_traced_like_any_other(exporting, ingestion):
    client = openai.OpenAI(base_url=f"{exporting.url}/v1", api_key="local", max_retries=0)
    client.chat.completions.create(model="mock", messages=[{"role": "user", "content": PROMPT}])

    def mock_dependency():
        return [
            e
            for e in ingestion.of_type("RemoteDependencyData")
            if e["data"]["baseData"]["properties"].get("gen_ai.provider.name") == "mock"
        ]

    [dependency, *_] = eventually(mock_dependency, "the Mock model's dependency envelope", ingestion, exporting)
    assert int(dependency["data"]["baseData"]["properties"]["gen_ai.usage.output_tokens"]) > 0


def test_a_collector_that_is_down_costs_the_caller_nothing(fake_azure, tmp_path_factory):
    directory = tmp_path_factory.mktemp("app-insights-down")
    env = gateway_env(
        MODELS_FILE=str(catalog(directory, fake_azure.url)),
        APPLICATIONINSIGHTS_CONNECTION_STRING=connection_string(f"http://127.0.0.1:{free_port()}"),
        **FAST_EXPORT,
    )
    process = GatewayProcess(env, directory / "gateway.log").start()
    try:
        client = openai.OpenAI(base_url=f"{process.url}/v1", api_key="local", max_retries=0)
        for _ in range(3):
            reply = client.chat.completions.create(model="chat-a", messages=[{"role": "user", "content": PROMPT}])
            assert reply.choices[0].message.content
        stream = client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}], stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    finally:
        process.stop()


#: Serves a call through the app's handlers, then prints the telemetry modules loaded.
IMPORTED_AFTER_A_CALL = """
import json, sys
from pathlib import Path
from starlette.testclient import TestClient
from shared.localhost import local_app

with TestClient(local_app(Path.cwd())) as client:
    body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
    answer = client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("azure.monitor", "opentelemetry.sdk")))))
"""


@pytest.mark.parametrize("configured", [False, True])
def test_the_exporter_is_imported_only_with_a_connection_string(tmp_path, configured):
    env = GatewayProcess(gateway_env(MODELS_FILE=str(PROJECT_DIR / "models.json")), tmp_path / "unused.log").env
    env |= FAST_EXPORT
    env["APPLICATIONINSIGHTS_CONNECTION_STRING"] = (
        connection_string(f"http://127.0.0.1:{free_port()}") if configured else ""
    )
    result = subprocess.run(
        [sys.executable, "-c", IMPORTED_AFTER_A_CALL],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    imported = json.loads(result.stdout.splitlines()[-1])
    assert bool(imported) is configured


#: Configures telemetry as the app does, then prints what processes each span.
SPAN_PIPELINE = """
import json
from opentelemetry import trace
import function_app  # builds the app, which configures telemetry

processors = trace.get_tracer_provider()._active_span_processor._span_processors
exporters = [type(p._batch_processor._exporter).__name__ for p in processors if hasattr(p, "_batch_processor")]
print(json.dumps({"processors": [type(p).__name__ for p in processors], "exporters": exporters}))
"""


def test_spans_are_exported_the_fast_way_with_nothing_else_on_their_path(tmp_path):
    env = GatewayProcess(gateway_env(MODELS_FILE=str(PROJECT_DIR / "models.json")), tmp_path / "unused.log").env
    env |= FAST_EXPORT | {"APPLICATIONINSIGHTS_CONNECTION_STRING": connection_string(f"http://127.0.0.1:{free_port()}")}
    result = subprocess.run(
        [sys.executable, "-c", SPAN_PIPELINE], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    pipeline = json.loads(result.stdout.splitlines()[-1])
    # The distro's GenAI main-agent processor is the bare SpanProcessor, which does nothing.
    assert pipeline == {"processors": ["SpanProcessor", "BatchSpanProcessor"], "exporters": ["GatewayTraceExporter"]}
