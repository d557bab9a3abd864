"""Routing, deployment health and the call pipeline (`shared/routing.py`, `shared/calls.py`) on their own.

A fake transport (the `providers.base.Transport` interface) scripts what each
deployment does, and a fake recorder keeps the usage records: no socket, no
provider, no LiteLLM. The last test builds a whole gateway in process.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shared.calls import Call, Limits
from shared.domain import Deployment, LLMModel, Operation
from shared.errors import (
    ConfigurationError,
    GatewayError,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
)
from shared.providers.base import Answer, Request
from shared.providers.mapper import ProviderCall
from shared.routing import (
    BREAKER_COOLDOWN_SECONDS,
    BREAKER_THRESHOLD,
    RATE_LIMIT_COOLDOWN_SECONDS,
    DeploymentHealth,
    Router,
    health_key,
)
from shared.usage import Meter
from tests.support import write_catalog

REQUEST = Request(Operation.CHAT_COMPLETION, {"model": "m"}, {})
USAGE = {"prompt_tokens": 3, "completion_tokens": 5}
#: Never set: an attempt that waits on it hangs until a budget ends it.
NEVER = asyncio.Event


@dataclass
class FakeStream:
    """A provider stream (`base.Upstream`): its events, then perhaps a failure."""

    items: list[Any]
    usage: Any = None
    model: str | None = "upstream-model"
    closed: list[bool] = field(default_factory=list)

    async def events(self) -> AsyncIterator[Any]:
        for item in self.items:
            if isinstance(item, BaseException):
                raise item
            if item == "hang":
                await NEVER().wait()
            if item == "usage":
                self.usage = USAGE
                continue
            yield item

    async def close(self, completed: bool) -> None:
        self.closed.append(completed)


class FakeTransport:
    """Each deployment (by name) answers, fails or hangs as scripted; every attempt is logged."""

    def __init__(self, script: dict[str, Any]) -> None:
        self.script = script
        self.attempts: list[str] = []

    async def _outcome(self, call: ProviderCall) -> Any:
        self.attempts.append(call.deployment.name)
        outcome = self.script[call.deployment.name]
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "hang":
            await NEVER().wait()
        return outcome

    async def whole(self, model: LLMModel, call: ProviderCall, request: Request) -> Answer[Any]:
        return await self._outcome(call)  # type: ignore[no-any-return]

    async def stream(self, model: LLMModel, call: ProviderCall, request: Request) -> FakeStream:
        return await self._outcome(call)  # type: ignore[no-any-return]


class FakeMapper:
    """Every deployment called through `transport`; one named `misconfigured` cannot be built."""

    def __init__(self, transport: FakeTransport) -> None:
        self.transport = transport

    async def call_for(self, model: LLMModel, deployment: Deployment) -> ProviderCall:
        if deployment.name.startswith("misconfigured"):
            raise ConfigurationError(f"Model '{model.id}' is misconfigured: $MISSING does not resolve.")
        return ProviderCall(deployment, self.transport, {})  # type: ignore[arg-type]


class FakeRecorder:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, record: dict[str, Any]) -> None:
        self.records.append(record)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def model(model_id: str, *deployments: tuple[str, int], fallbacks: tuple[str, ...] = ()) -> LLMModel:
    """A Mock catalog entry with deployments (name, priority)."""
    return LLMModel.from_document(
        {
            "id": model_id,
            "name": model_id,
            "provider": "Mock",
            "model_type": "Mock",
            "code": model_id,
            "parameters": {},
            "operations": ["ChatCompletion"],
            "costs": {"input": 1.0, "output": 2.0},
            "fallbacks": list(fallbacks),
            "deployments": [{"name": name, "code": name, "priority": priority} for name, priority in deployments],
        }
    )


class Pipeline:
    """A router over the fake transport, and calls made through it."""

    def __init__(self, script: dict[str, Any], limits: Limits | None = None) -> None:
        self.transport = FakeTransport(script)
        self.clock = Clock()
        self.router = Router(FakeMapper(self.transport), DeploymentHealth(self.clock), random.Random(0))  # type: ignore[arg-type]
        self.recorder = FakeRecorder()
        self.limits = limits or Limits(request_seconds=5.0, first_byte_seconds=1.0, whole_first_byte_seconds=1.0)

    def call(self, *candidates: LLMModel, stream: bool = False) -> Call:
        meter = Meter(
            self.recorder,  # type: ignore[arg-type]
            request_id="r",
            project="team",
            model=candidates[0],
            operation="ChatCompletion",
            stream=stream,
        )
        deadline = asyncio.get_running_loop().time() + self.limits.request_seconds
        return Call(self.router, list(candidates), meter, deadline, self.limits)

    def health(self, model_id: str, deployment: str) -> float:
        return self.router.health.remaining((model_id, deployment))


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


# DeploymentHealth


def test_a_rate_limit_cools_a_deployment_down_for_its_retry_after_or_the_default():
    clock = Clock()
    health = DeploymentHealth(clock)
    health.failed(("m", "a"), RateLimited("slow down", headers={"Retry-After": "20"}))
    health.failed(("m", "b"), RateLimited("slow down"))
    assert health.remaining(("m", "a")) == 20.0
    assert health.remaining(("m", "b")) == RATE_LIMIT_COOLDOWN_SECONDS
    clock.now += 20.0
    assert health.remaining(("m", "a")) == 0.0


def test_consecutive_failures_open_the_breaker_and_a_success_resets_the_count():
    clock = Clock()
    health = DeploymentHealth(clock)
    key = ("m", "a")
    for _ in range(BREAKER_THRESHOLD - 1):
        health.failed(key, UpstreamError("down"))
    health.succeeded(key)
    for _ in range(BREAKER_THRESHOLD - 1):
        health.failed(key, UpstreamError("down"))
    assert health.remaining(key) == 0.0  # the success started the count again
    health.failed(key, UpstreamError("down"))
    assert health.remaining(key) == BREAKER_COOLDOWN_SECONDS
    clock.now += BREAKER_COOLDOWN_SECONDS
    assert health.remaining(key) == 0.0


# Router


def test_deployments_are_tried_by_priority_and_a_retryable_failure_moves_on():
    pipeline = Pipeline({"first": RateLimited("busy"), "second": UpstreamError("down"), "third": Answer({"ok": 1})})
    chat = model("m", ("third", 2), ("first", 0), ("second", 1))

    async def scenario():
        return await pipeline.call(chat).whole(REQUEST)

    answered, body = run(scenario())
    assert answered.id == "m" and body == {"ok": 1}
    assert pipeline.transport.attempts == ["first", "second", "third"]
    assert pipeline.health("m", "first") == RATE_LIMIT_COOLDOWN_SECONDS
    assert [record["status"] for record in pipeline.recorder.records] == [200]


def test_a_cooling_deployment_is_skipped_until_every_candidate_cools():
    pipeline = Pipeline({"a": Answer("a"), "b": Answer("b")})
    chat = model("m", ("a", 0), ("b", 1))
    pipeline.router.health.failed(health_key(chat, chat.deployments[0]), RateLimited("busy"))
    assert [d.name for _, d in pipeline.router.candidates([chat])] == ["b"]
    pipeline.router.health.failed(health_key(chat, chat.deployments[1]), RateLimited("x", headers={"Retry-After": "3"}))
    # all cooling: the one that recovers first is called anyway
    assert [d.name for _, d in pipeline.router.candidates([chat])] == ["b"]


def test_a_caller_error_is_not_retried_and_does_not_cool_the_deployment():
    pipeline = Pipeline({"a": UpstreamRejected(400, "bad messages"), "b": Answer("b")})
    chat = model("m", ("a", 0), ("b", 1))

    async def scenario():
        return await pipeline.call(chat).whole(REQUEST)

    with pytest.raises(UpstreamRejected):
        run(scenario())
    assert pipeline.transport.attempts == ["a"]
    assert pipeline.health("m", "a") == 0.0
    assert [record["status"] for record in pipeline.recorder.records] == [400]


def test_fallbacks_answer_when_every_deployment_fails_and_the_answering_model_is_metered():
    pipeline = Pipeline({"a": UpstreamError("down"), "fb": Answer({"ok": 1}, USAGE, "provider-name")})
    requested, fallback = model("m", ("a", 0), fallbacks=("f",)), model("f", ("fb", 0))

    async def scenario():
        return await pipeline.call(requested, fallback).whole(REQUEST)

    answered, _ = run(scenario())
    assert answered.id == "f"
    (record,) = pipeline.recorder.records
    assert (record["model"], record["status"]) == ("f", 200)
    assert (record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]) == (3, 5, 8)
    assert record["cost"] == fallback.calculate_cost(3, 5)


def test_a_provider_failure_outranks_a_configuration_error_and_alone_the_configuration_error_is_the_callers():
    pipeline = Pipeline({"a": UpstreamError("down")})

    async def scenario(*candidates: LLMModel):
        return await pipeline.call(*candidates).whole(REQUEST)

    with pytest.raises(UpstreamError):
        run(scenario(model("m", ("misconfigured", 0), ("a", 1))))
    with pytest.raises(ConfigurationError):
        run(scenario(model("n", ("misconfigured", 0))))
    assert pipeline.health("n", "misconfigured") == 0.0  # counted towards the breaker, not yet open
    assert [record["status"] for record in pipeline.recorder.records] == [502, 500]


# Call: budgets


def test_a_whole_answer_that_does_not_start_in_time_moves_on_to_the_next_deployment():
    limits = Limits(request_seconds=5.0, first_byte_seconds=1.0, whole_first_byte_seconds=0.05)
    pipeline = Pipeline({"a": "hang", "b": Answer({"ok": 1})}, limits)

    async def scenario():
        return await pipeline.call(model("m", ("a", 0), ("b", 1))).whole(REQUEST)

    _, body = run(scenario())
    assert body == {"ok": 1} and pipeline.transport.attempts == ["a", "b"]


def test_the_request_deadline_ends_the_call_with_a_timeout_and_a_504_record():
    limits = Limits(request_seconds=0.05, first_byte_seconds=1.0, whole_first_byte_seconds=1.0)
    pipeline = Pipeline({"a": "hang"}, limits)

    async def scenario():
        return await pipeline.call(model("m", ("a", 0))).whole(REQUEST)

    with pytest.raises(UpstreamTimeout, match="time budget"):
        run(scenario())
    assert [record["status"] for record in pipeline.recorder.records] == [504]


# Call: streams


async def _drain(events: AsyncIterator[Any]) -> list[Any]:
    return [event async for event in events]


def test_a_stream_that_fails_before_its_first_event_fails_over_and_is_metered_when_it_ends():
    good = FakeStream([(None, {"n": 1}), "usage", (None, {"n": 2})])
    pipeline = Pipeline({"a": FakeStream([UpstreamError("broke")]), "b": good})

    async def scenario():
        answered, events = await pipeline.call(model("m", ("a", 0), ("b", 1)), stream=True).stream(REQUEST)
        assert pipeline.recorder.records == []  # not before the stream ends
        return answered, await _drain(events)

    answered, events = run(scenario())
    assert answered.id == "m"
    assert events == [(None, {"n": 1}), (None, {"n": 2})]
    assert pipeline.transport.attempts == ["a", "b"] and good.closed == [True]
    assert pipeline.router.health._failures == {("m", "a"): 1}  # one failure, counted once; b's stream healthy
    (record,) = pipeline.recorder.records
    assert (record["status"], record["prompt_tokens"], record["completion_tokens"]) == (200, 3, 5)
    assert record["stream"] is True


def test_a_stream_broken_off_after_its_first_event_does_not_fail_over_and_counts_against_the_deployment():
    broken = FakeStream([(None, {"n": 1}), UpstreamError("broke")])
    pipeline = Pipeline({"a": broken, "b": FakeStream([(None, {"n": 9})])})

    async def scenario():
        _, events = await pipeline.call(model("m", ("a", 0), ("b", 1)), stream=True).stream(REQUEST)
        seen = []
        with pytest.raises(UpstreamError):
            async for event in events:
                seen.append(event)
        return seen

    assert run(scenario()) == [(None, {"n": 1})]
    assert pipeline.transport.attempts == ["a"] and broken.closed == [False]
    assert [record["status"] for record in pipeline.recorder.records] == [502]
    assert pipeline.router.health._failures == {("m", "a"): 1}


def test_a_stream_whose_first_event_does_not_come_in_time_fails_over():
    limits = Limits(request_seconds=5.0, first_byte_seconds=0.05, whole_first_byte_seconds=1.0)
    pipeline = Pipeline({"a": FakeStream(["hang"]), "b": FakeStream([(None, {"n": 1})])}, limits)

    async def scenario():
        _, events = await pipeline.call(model("m", ("a", 0), ("b", 1)), stream=True).stream(REQUEST)
        return await _drain(events)

    assert run(scenario()) == [(None, {"n": 1})]
    assert pipeline.transport.attempts == ["a", "b"]


# A whole gateway in process: settings in, the use case out, no socket.


class FakeInbound:
    """What a use case reads of a request (`inbound.Inbound`), without HTTP."""

    def __init__(self, body: dict[str, Any], request_id: str = "in-process") -> None:
        self.body = body
        self.request_id = request_id
        self.headers: dict[str, str] = {}

    async def json(self, read: Any = None) -> Any:
        return self.body if read is None else read(self.body)


def test_a_gateway_built_from_settings_serves_a_use_case_in_process(tmp_path: Path):
    from shared.service import build_gateway
    from shared.settings import Settings

    entry = {"id": "mock", "name": "Mock", "provider": "Mock", "model_type": "Mock", "code": "mock"}
    entry |= {"parameters": {"response": "in process"}, "operations": ["ChatCompletion", "embeddings"]}
    settings = Settings(
        models_file=str(write_catalog(tmp_path / "models.json", [entry])),
        projects_file=str(tmp_path / "projects.json"),
        usage_file=str(tmp_path / "usage.jsonl"),
        allow_anonymous=True,
    )

    async def scenario() -> tuple[Any, Any]:
        gateway = build_gateway(settings)
        try:
            chat = await gateway.chat_completions(
                FakeInbound({"model": "mock", "messages": [{"role": "user", "content": "hi"}]})  # type: ignore[arg-type]
            )
            embedded = await gateway.embeddings(FakeInbound({"model": "mock", "input": "a b c"}))  # type: ignore[arg-type]
            with pytest.raises(GatewayError) as missing:
                await gateway.embeddings(FakeInbound({"model": "no-such-model", "input": "x"}))  # type: ignore[arg-type]
            assert missing.value.status == 404
        finally:
            await gateway.close()
        return chat, embedded

    chat, embedded = run(scenario())
    assert chat.body["choices"][0]["message"]["content"] == "in process"
    assert chat.headers == {"x-gateway-model": "mock"}
    assert embedded.body["usage"]["prompt_tokens"] == 3 and len(embedded.body["data"]) == 1
    records = [json.loads(line) for line in (tmp_path / "usage.jsonl").read_text().splitlines()]
    assert [(record["operation"], record["status"]) for record in records] == [
        ("ChatCompletion", 200),
        ("embeddings", 200),
    ]
