"""Telemetry with in-memory exporters: the gateway served in this process,
against the fake Azure OpenAI, records one request span per call with a
GenAI client span per upstream attempt, and the GenAI metrics; never a
prompt, a completion or a secret. Their Application Insights envelopes, built
the fast way (`shared/app_insights.py`), are the ones the exporter would build."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.routing import Route

from shared import telemetry
from shared.gate import Gate
from shared.http import respond
from shared.service import build_gateway
from shared.settings import Settings
from tests.conftest import UPSTREAM_KEYS, azure_entry
from tests.fakes.azure_openai import UPSTREAM_MODEL
from tests.fakes.server import ServerThread
from tests.support import write_projects
from tests.test_resilience import deployment

TEAM_KEY = "sk-gw-telemetry-team-0001"
PROMPT = "purple elephants tap dance at midnight"
USER = [{"role": "user", "content": PROMPT}]
CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE_ID}-00f067aa0ba902b7-01"


class Recorded:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()
        #: As Application Insights' exporter reads them: each collection holds what came since the last.
        self.deltas = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.providers = (tracer_provider, MeterProvider(metric_readers=[self.metrics, self.deltas]))
        self.usage_file: Path | None = None

    def usage_record(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The usage record of `request_id`, once the recorder has written it."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.usage_file.read_text().splitlines() if self.usage_file.exists() else []
            records = [record for line in lines if (record := json.loads(line))["request_id"] == request_id]
            if records:
                [record] = records
                return record
            assert time.monotonic() < deadline, f"no usage record for request {request_id}"
            time.sleep(0.02)

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def trace(self, request_id: str, timeout: float = 30.0) -> tuple[ReadableSpan, list[ReadableSpan]]:
        """The request span with `request_id` and its attempt spans, in start order
        (a streamed response's span ends just after its last byte is sent)."""
        deadline = time.monotonic() + timeout
        while not (roots := [s for s in self.finished() if s.attributes.get("gateway.request_id") == request_id]):
            assert time.monotonic() < deadline, f"no finished span for request {request_id}"
            time.sleep(0.02)
        [root] = roots
        spans = self.finished()
        children = [s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id]
        return root, sorted(children, key=lambda s: s.start_time)

    def points(self, name: str, reader: InMemoryMetricReader | None = None) -> list[Any]:
        data = (reader or self.metrics).get_metrics_data()
        return [
            point
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


@pytest.fixture(scope="module")
def traced(fake_azure, tmp_path_factory):
    directory = tmp_path_factory.mktemp("telemetry")
    url = fake_azure.url
    catalog = [
        azure_entry("chat-a", "dep-a", url),
        azure_entry("doomed", "unused", url, deployments=[deployment("only", "broken", url)], fallbacks=["rescuer"]),
        azure_entry("rescuer", "dep-b", url),
        azure_entry("rate-limited", "rate-limited", url),
        azure_entry("empty", "empty-stream", url),
    ]
    (directory / "models.json").write_text(json.dumps(catalog))
    projects = write_projects(directory / "projects.json", {TEAM_KEY: "team-a"})
    settings = Settings(
        models_file=str(directory / "models.json"),
        projects_file=str(projects),
        usage_file=str(directory / "usage.jsonl"),
    )
    recorded = Recorded()
    recorded.usage_file = directory / "usage.jsonl"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KEY_A", UPSTREAM_KEYS["dep-a"])
        env.setenv("KEY_B", UPSTREAM_KEYS["dep-b"])
        telemetry.enable(*recorded.providers)
        gateway = build_gateway(settings)

        async def chat(request):
            return await respond(request, gateway.chat_completions, settings.max_request_bytes, Gate(None))

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            await gateway.close()

        app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])], lifespan=lifespan)
        try:
            with ServerThread(app, lifespan="on") as server:
                yield server, recorded
        finally:
            telemetry.disable()


def client(server, request_id, **headers):
    return openai.OpenAI(
        base_url=f"{server.url}/v1",
        api_key=TEAM_KEY,
        max_retries=0,
        default_headers={"x-request-id": request_id, **headers},
    )


def assert_nothing_private(recorded: Recorded) -> None:
    values = [str(value) for span in recorded.finished() for value in span.attributes.values()]
    values += [span.name for span in recorded.finished()]
    for name in ("gen_ai.client.token.usage", "gen_ai.client.operation.duration"):
        values += [str(value) for point in recorded.points(name) for value in point.attributes.values()]
    text = " ".join(values)
    for private in (PROMPT, "purple", "echo", TEAM_KEY, *UPSTREAM_KEYS.values()):
        assert private not in text


def test_a_chat_is_one_request_span_over_one_genai_client_span(traced):
    server, recorded = traced
    reply = client(server, "t-chat", traceparent=CALLER_TRACEPARENT).chat.completions.create(
        model="chat-a", messages=USER
    )

    root, [attempt] = recorded.trace("t-chat")
    assert root.kind is SpanKind.SERVER and root.name == "POST /v1/chat/completions"
    assert f"{root.context.trace_id:032x}" == CALLER_TRACE_ID  # the caller's trace, continued
    assert root.attributes["gateway.project"] == "team-a"
    assert root.attributes["http.response.status_code"] == 200
    assert attempt.kind is SpanKind.CLIENT and attempt.name == "chat dep-a"
    assert attempt.attributes["gen_ai.operation.name"] == "chat"
    assert attempt.attributes["gen_ai.provider.name"] == "azure.ai.openai"
    assert attempt.attributes["gen_ai.request.model"] == "dep-a"
    assert attempt.attributes["gen_ai.response.model"] == UPSTREAM_MODEL
    assert attempt.attributes["gateway.model"] == "chat-a"
    assert attempt.attributes["gateway.deployment"] == "default"
    assert attempt.attributes["gateway.project"] == "team-a"
    assert attempt.attributes["gateway.stream"] is False
    assert attempt.attributes["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert attempt.attributes["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
    assert "error.type" not in attempt.attributes
    assert_nothing_private(recorded)


def test_a_stream_records_its_time_to_first_chunk_and_tokens_when_it_ends(traced):
    server, recorded = traced
    chunks = list(
        client(server, "t-stream").chat.completions.create(
            model="chat-a",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    root, [attempt] = recorded.trace("t-stream")
    assert attempt.attributes["gateway.stream"] is True
    assert attempt.attributes["gen_ai.response.model"] == UPSTREAM_MODEL
    first_chunk = attempt.attributes["gen_ai.response.time_to_first_chunk"]
    assert 0 < first_chunk <= (attempt.end_time - attempt.start_time) / 1e9
    assert attempt.attributes["gen_ai.usage.output_tokens"] == chunks[-1].usage.completion_tokens > 0
    assert root.end_time >= attempt.end_time  # the request lasts as long as its stream
    assert recorded.points("gen_ai.client.operation.time_to_first_chunk")
    assert_nothing_private(recorded)


def test_a_stream_the_provider_ends_before_any_chunk_still_ends_its_span_and_is_metered(traced):
    server, recorded = traced
    chunks = list(client(server, "t-empty").chat.completions.create(model="empty", messages=USER, stream=True))

    assert chunks == []  # what the provider sent: nothing
    root, [attempt] = recorded.trace("t-empty")
    assert root.attributes["http.response.status_code"] == 200
    assert attempt.attributes["gen_ai.usage.output_tokens"] == 0
    assert "error.type" not in attempt.attributes
    record = recorded.usage_record("t-empty")
    assert (record["status"], record["model"], record["stream"]) == (200, "empty", True)
    assert (record["prompt_tokens"], record["completion_tokens"], record["cost"]) == (0, 0, 0)


def test_a_fallback_after_a_500_is_a_second_attempt_saying_why(traced):
    server, recorded = traced
    reply = client(server, "t-fallback").chat.completions.create(model="doomed", messages=USER)

    root, [failed, rescued] = recorded.trace("t-fallback")
    assert failed.attributes["gateway.model"] == "doomed" and failed.attributes["gateway.deployment"] == "only"
    assert failed.attributes["error.type"] == "upstream_error"
    assert not failed.status.is_ok
    assert rescued.attributes["gateway.model"] == "rescuer"
    assert rescued.attributes["gateway.fallback_from"] == "doomed"
    assert rescued.attributes["gateway.retry_reason"] == "upstream_error"
    assert rescued.attributes["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
    assert root.attributes["http.response.status_code"] == 200
    assert_nothing_private(recorded)


def test_a_429_marks_the_attempt_and_the_request(traced):
    server, recorded = traced
    with pytest.raises(openai.RateLimitError):
        client(server, "t-429").chat.completions.create(model="rate-limited", messages=USER)

    root, [attempt] = recorded.trace("t-429")
    assert attempt.attributes["error.type"] == "rate_limit_exceeded"
    assert root.attributes["http.response.status_code"] == 429
    assert_nothing_private(recorded)


def test_metrics_count_tokens_and_durations_by_project_model_deployment_and_status(traced):
    server, recorded = traced
    reply = client(server, "t-metrics").chat.completions.create(model="chat-a", messages=USER)

    tokens = {
        point.attributes["gen_ai.token.type"]: point
        for point in recorded.points("gen_ai.client.token.usage")
        if point.attributes["gateway.model"] == "chat-a" and not point.attributes["gateway.stream"]
    }
    assert tokens["input"].attributes["gateway.project"] == "team-a"
    assert tokens["input"].attributes["gateway.deployment"] == "default"
    assert tokens["input"].attributes["http.response.status_code"] == 200
    assert tokens["input"].count >= 1 and tokens["input"].sum % reply.usage.prompt_tokens == 0
    client(server, "t-metrics-fallback").chat.completions.create(model="doomed", messages=USER)
    durations = recorded.points("gen_ai.client.operation.duration")
    assert any(p.attributes["gateway.model"] == "chat-a" and p.sum > 0 for p in durations)
    assert any(
        p.attributes["gateway.deployment"] == "only" and p.attributes.get("error.type") == "upstream_error"
        for p in durations
    )
    assert_nothing_private(recorded)


def test_delta_metrics_count_each_token_once_in_the_collection_after_its_call(traced):
    server, recorded = traced

    def chat_a_input_tokens() -> list[Any]:
        return [
            point
            for point in recorded.points("gen_ai.client.token.usage", recorded.deltas)
            if point.attributes["gateway.model"] == "chat-a" and point.attributes["gen_ai.token.type"] == "input"
        ]

    chat_a_input_tokens()  # what earlier calls left
    replies = [client(server, f"t-delta-{n}").chat.completions.create(model="chat-a", messages=USER) for n in range(2)]

    [point] = chat_a_input_tokens()
    assert point.count == 2
    assert point.sum == sum(reply.usage.prompt_tokens for reply in replies)
    assert point.min == min(reply.usage.prompt_tokens for reply in replies)
    assert chat_a_input_tokens() == []  # counted once: nothing new since


def wire(envelope: Any) -> Any:
    """An envelope as the exporter sends it, and as it keeps it on disk to retry."""
    from azure.monitor.opentelemetry.exporter._generated.exporter._utils.model_base import SdkJSONEncoder

    return json.loads(json.dumps(envelope, cls=SdkJSONEncoder, exclude_readonly=True)), envelope.as_dict()


def exporters_envelope(span: ReadableSpan) -> Any:
    from azure.monitor.opentelemetry.exporter.export.trace._exporter import _convert_span_to_envelope

    envelope = _convert_span_to_envelope(span)
    envelope.instrumentation_key = "ikey"
    return envelope


def test_application_insights_gets_the_envelopes_the_exporter_would_have_built(traced):
    from shared.app_insights import fast_envelope

    server, recorded = traced
    client(server, "t-wire", traceparent=CALLER_TRACEPARENT).chat.completions.create(model="chat-a", messages=USER)
    list(client(server, "t-wire-stream").chat.completions.create(model="chat-a", messages=USER, stream=True))
    client(server, "t-wire-fallback").chat.completions.create(model="doomed", messages=USER)
    with pytest.raises(openai.RateLimitError):
        client(server, "t-wire-429").chat.completions.create(model="rate-limited", messages=USER)

    traces = [recorded.trace(request_id) for request_id in ("t-wire", "t-wire-stream", "t-wire-fallback", "t-wire-429")]
    spans = [span for root, attempts in traces for span in (root, *attempts)]
    assert len(spans) == 9
    for span in spans:
        envelope = fast_envelope(span, telemetry.INSTRUMENTATION_NAME, "ikey")
        assert envelope is not None, f"{span.name} {dict(span.attributes)} took the exporter's slow way"
        assert wire(envelope) == wire(exporters_envelope(span)), span.name


def test_a_sampled_span_and_a_span_of_another_shape_are_sent_as_the_exporter_would():
    from azure.monitor.opentelemetry.exporter import ApplicationInsightsSampler

    from shared.app_insights import fast_envelope

    spans = InMemorySpanExporter()
    provider = TracerProvider(sampler=ApplicationInsightsSampler(sampling_ratio=1.0))
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = provider.get_tracer(telemetry.INSTRUMENTATION_NAME)
    attributes = {"http.request.method": "POST", "http.route": "/v1/embeddings", "gateway.request_id": "r"}
    tracer.start_span("POST /v1/embeddings", kind=SpanKind.SERVER, attributes=attributes).end()
    tracer.start_span("chat dep-a", kind=SpanKind.CLIENT, attributes={"enduser.id": "someone"}).end()
    sampled, foreign = spans.get_finished_spans()

    assert sampled.attributes["_MS.sampleRate"] == 100.0
    envelope = fast_envelope(sampled, telemetry.INSTRUMENTATION_NAME, "ikey")
    assert envelope is not None and wire(envelope) == wire(exporters_envelope(sampled))
    assert fast_envelope(foreign, telemetry.INSTRUMENTATION_NAME, "ikey") is None  # left to the exporter
