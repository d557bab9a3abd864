"""Traces and metrics in OpenTelemetry's GenAI conventions, for Application Insights.

Off unless `APPLICATIONINSIGHTS_CONNECTION_STRING` is set: then nothing from
OpenTelemetry or Azure Monitor is imported, and every hook below returns at
once. On, `configure` sets up the Azure Monitor distro (batching exporters:
a collector that is down loses telemetry, never time on a call) and:

- one SERVER span per gateway request (`gateway.request_id`, `gateway.project`),
  continuing the caller's W3C `traceparent`;
- under it, one CLIENT span per upstream attempt, named `{operation} {model}`
  and attributed by the GenAI conventions (`gen_ai.operation.name`,
  `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.response.model`,
  `gen_ai.usage.*`, `error.type`), with the deployment, the retry or fallback
  reason, whether it streamed and a stream's time to first chunk;
- the metrics `gen_ai.client.operation.duration` (per attempt) and
  `gen_ai.client.token.usage` (per call), by project, catalog model,
  deployment and status.

Neither prompt nor completion text, nor any header or credential, is ever
put on a span or a metric: attributes come only from the catalog entry, the
deployment, the caller's project and counts. The spans' attributes are the
ones `app_insights` knows how to send the fast way: add one there too.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .domain import LLMModel, ModelType, Operation, Provider
from .usage import ANONYMOUS_PROJECT

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

    from .providers.base import Attempt
    from .providers.mapper import ProviderCall
    from .settings import Settings
    from .usage import Meter

T = TypeVar("T")

INSTRUMENTATION_NAME = "llm-gateway"

#: `gen_ai.operation.name` per catalog operation (the conventions' well-known values).
GEN_AI_OPERATION: dict[Operation, str] = {
    Operation.CHAT_COMPLETION: "chat",
    Operation.COMPLETION: "text_completion",
    Operation.RESPONSES: "chat",
    Operation.EMBEDDINGS: "embeddings",
    Operation.IMAGES: "generate_content",
    Operation.AUDIO_TTS: "generate_content",
    Operation.AUDIO_STT: "generate_content",
    Operation.AUDIO_TRANSLATION: "generate_content",
    Operation.AUDIO_REALTIME: "generate_content",
}

#: `gen_ai.provider.name` per provider (the conventions' well-known values where there is one).
GEN_AI_PROVIDER: dict[Provider, str] = {
    Provider.AZURE: "azure.ai.openai",
    Provider.GOOGLE: "gcp.vertex_ai",
    Provider.MOCK: "mock",
}

#: `gen_ai.provider.name` for model types a provider's own name does not describe.
GEN_AI_PROVIDER_OF_TYPE: dict[ModelType, str] = {ModelType.AZURE_FOUNDRY: "azure.ai.inference"}

#: The distro's automatic instrumentations, all off: upstream calls get the
#: gateway's own spans, and the Azure SDK's (Cosmos, Key Vault) stay on.
DISABLED_INSTRUMENTATIONS = (
    "django",
    "fastapi",
    "flask",
    "httpx",
    "httpx2",
    "psycopg2",
    "requests",
    "urllib",
    "urllib3",
)

#: Span attributes about one attempt's history, left off the metrics.
PER_ATTEMPT_ONLY = ("gateway.retry_reason", "gateway.fallback_from")


class Telemetry:
    """The tracer and instruments, and the spans they make."""

    def __init__(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from .histograms import Histograms
        from .spans import GatewayTracer

        self.tracer = GatewayTracer(tracer_provider.get_tracer(INSTRUMENTATION_NAME), INSTRUMENTATION_NAME)
        meter = Histograms(meter_provider, INSTRUMENTATION_NAME)
        self.operation_duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration."
        )
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Number of input and output tokens used."
        )
        self.time_to_first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk of a streamed response.",
        )
        self.propagator = TraceContextTextMapPropagator()

    async def request(self, request: Request, request_id: str, handle: Callable[[], Awaitable[Response]]) -> Response:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, StatusCode

        route = getattr(request.scope.get("route"), "path", None) or request.url.path
        # A span already open here (the Functions worker's invocation context, when the
        # worker's own telemetry is on) is the parent; else the caller's traceparent, if any.
        remote_parent = "traceparent" in request.headers and not trace.get_current_span().get_span_context().is_valid
        span = self.tracer.start(
            f"{request.method} {route}",
            SpanKind.SERVER,
            self.propagator.extract(request.headers) if remote_parent else None,
            {
                "http.request.method": request.method,
                "http.route": route,
                "url.path": request.url.path,
                "gateway.request_id": request_id,
            },
        )
        token = context.attach(trace.set_span_in_context(span))
        try:
            response = await handle()
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(StatusCode.ERROR)
            span.end()
            raise
        finally:
            context.detach(token)
        span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 500:
            span.set_status(StatusCode.ERROR)
            span.set_attribute("error.type", str(response.status_code))
        if isinstance(response, StreamingResponse):
            response.body_iterator = _ending(response.body_iterator, span)
        else:
            span.end()
        return response

    def attempts(self, attempt: Attempt[T], meter: Meter) -> Attempt[T]:
        """`attempt` with a span per run; the one that succeeds ends when `meter` finishes."""
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, StatusCode

        requested = meter.model
        previous: list[str] = []

        async def traced(model: LLMModel, call: ProviderCall) -> T:
            attributes = self._attributes(model, call, meter)
            if previous:
                attributes["gateway.retry_reason"] = previous[-1]
            if model.id != requested.id:
                attributes["gateway.fallback_from"] = requested.id
            operation = attributes["gen_ai.operation.name"]
            span = self.tracer.start(f"{operation} {call.deployment.code}", SpanKind.CLIENT, None, attributes)
            started = time.monotonic()
            token = context.attach(trace.set_span_in_context(span))
            try:
                result = await attempt(model, call)
            except BaseException as exc:
                error_type = _error_type(exc)
                previous.append(error_type)
                span.set_attribute("error.type", error_type)
                span.set_status(StatusCode.ERROR)
                span.end()
                self.operation_duration.record(
                    time.monotonic() - started, _metric_attributes(attributes) | {"error.type": error_type}
                )
                raise
            finally:
                context.detach(token)
            outcome: dict[str, Any] = {}
            if meter.stream:
                first_chunk = outcome["gen_ai.response.time_to_first_chunk"] = time.monotonic() - started
                self.time_to_first_chunk.record(first_chunk, _metric_attributes(attributes))
            meter.observers.append(
                lambda finished, status: self._finish(span, started, attributes, outcome, finished, status)
            )
            return result

        return traced

    def _attributes(self, model: LLMModel, call: ProviderCall, meter: Meter) -> dict[str, Any]:
        operation = Operation(meter.operation)
        return {
            "gen_ai.operation.name": GEN_AI_OPERATION[operation],
            "gen_ai.provider.name": GEN_AI_PROVIDER_OF_TYPE.get(model.model_type, GEN_AI_PROVIDER[model.provider]),
            "gen_ai.request.model": call.deployment.code,
            "gateway.operation": operation.value,
            "gateway.model": model.id,
            "gateway.deployment": call.deployment.name,
            "gateway.project": meter.project or ANONYMOUS_PROJECT,
            "gateway.stream": meter.stream,
        }

    def _finish(
        self,
        span: Span,
        started: float,
        attributes: dict[str, Any],
        outcome: dict[str, Any],
        meter: Meter,
        status: int,
    ) -> None:
        """End a successful attempt's span when its call ends, with what the attempt and
        the call's end found (`outcome`: set on the span at once, for a stream its first chunk)."""
        from opentelemetry.trace import StatusCode

        outcome |= {
            "gen_ai.usage.input_tokens": meter.prompt_tokens,
            "gen_ai.usage.output_tokens": meter.completion_tokens,
            "http.response.status_code": status,
        }
        if meter.response_model:
            outcome["gen_ai.response.model"] = meter.response_model
        metric = _metric_attributes(attributes) | {"http.response.status_code": status}
        if status >= 400:
            outcome["error.type"] = metric["error.type"] = str(status)
            span.set_status(StatusCode.ERROR)
        span.set_attributes(outcome)
        span.end()
        self.operation_duration.record(time.monotonic() - started, metric)
        if status < 400 or meter.prompt_tokens or meter.completion_tokens:
            self.token_usage.record(meter.prompt_tokens, metric | {"gen_ai.token.type": "input"})
            self.token_usage.record(meter.completion_tokens, metric | {"gen_ai.token.type": "output"})


def _metric_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """The span attributes metrics are split by."""
    return {key: value for key, value in attributes.items() if key not in PER_ATTEMPT_ONLY}


def _error_type(exc: BaseException) -> str:
    """A low-cardinality name for a failure: the gateway error's code, else its class."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else type(exc).__name__


async def _ending(body: AsyncIterable[Any], span: Span) -> AsyncIterator[Any]:
    """A streamed body that ends the request's span when it ends."""
    try:
        async for chunk in body:
            yield chunk
    finally:
        span.end()


_active: Telemetry | None = None


def configure(settings: Settings) -> None:
    """Export to Application Insights when its connection string is set; else stay off.

    The Azure Monitor distro reads `APPLICATIONINSIGHTS_AUTHENTICATION_STRING`
    itself (Entra ID auth with the app's managed identity). Logs are left to
    the Functions host, which already collects them: exported from here they
    would come twice, and the exporter's own log lines would be exported in
    turn, without end. The distro takes that switch only from the environment
    (it ignores `disable_logging`), so it is set there.

    What would cost every call CPU for nothing is left out: live metrics and
    the distro's performance counters (a span processor that counts every
    span, and a reader of process counters the Functions platform already
    reports), the GenAI main-agent span processor and the exporter's model
    layer for the gateway's own spans (`app_insights.gateway_pipeline`); the
    gateway's spans and histograms are its own (`spans`, `histograms`), not
    the SDK's.
    """
    if not settings.applicationinsights_connection_string:
        return
    from azure.monitor.opentelemetry import configure_azure_monitor
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from .app_insights import gateway_pipeline

    os.environ["OTEL_LOGS_EXPORTER"] = "none"
    with gateway_pipeline(INSTRUMENTATION_NAME):
        configure_azure_monitor(
            connection_string=settings.applicationinsights_connection_string,
            enable_live_metrics=False,
            enable_performance_counters=False,
            instrumentation_options={name: {"enabled": False} for name in DISABLED_INSTRUMENTATIONS},
        )
    tracer_provider, meter_provider = trace.get_tracer_provider(), metrics.get_meter_provider()
    if not isinstance(tracer_provider, TracerProvider) or not isinstance(meter_provider, MeterProvider):
        raise TypeError("the Azure Monitor distro set up no OpenTelemetry SDK providers to record with")
    enable(tracer_provider, meter_provider)


def enable(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
    """Record with these providers (`configure` calls it; tests pass in-memory ones)."""
    global _active
    _active = Telemetry(tracer_provider, meter_provider)


def disable() -> None:
    global _active
    _active = None


async def traced_request(request: Request, request_id: str, handle: Callable[[], Awaitable[Response]]) -> Response:
    """`handle()`'s response, inside a span for the request when telemetry is on."""
    if _active is None:
        return await handle()
    return await _active.request(request, request_id, handle)


def traced_attempts(attempt: Attempt[T], meter: Meter) -> Attempt[T]:
    """`attempt` with a span per upstream try when telemetry is on."""
    return attempt if _active is None else _active.attempts(attempt, meter)


def set_project(project: str | None) -> None:
    """Name the caller's project on the current request's span."""
    if _active is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attribute("gateway.project", project or ANONYMOUS_PROJECT)
