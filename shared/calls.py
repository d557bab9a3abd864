"""One call to the providers, from the first attempt to the usage record.

`Calls.route` makes a `Call` per request (the use cases' route step): the
candidates (the caller's model, then its usable fallbacks: `Catalog.models_for`),
the meter that writes the request's usage record, and the deadline. A call runs an *attempt* (one try
on one deployment, by the deployment's transport: see `providers/base.py`)
on each candidate deployment in the router's order until one succeeds, all
within the deadline. There are two kinds:

- `Call.whole(request)`: the transport returns an `Answer`, the whole result
  and its token counts, within the first-byte budget of a whole answer, so
  a deployment that accepts and never answers is left for the next one.
- `Call.stream(request)`: the transport opens an `Upstream`, a provider stream.
  The call waits for its first event within the first-byte budget, so a
  stream that fails to start can still move on to another deployment. Then
  it passes on the events, each one within the deadline.

When the caller has budgets or rate limits, `Calls.route` admits the call
(`limits.Limiter`: its worst case reserved, or the refusal raised) before any
upstream call; the meter's finish settles it, and every answer and error
carries the caller's x-ratelimit headers (`Call.headers`). A caller who hangs
up on a stream before the provider's usage chunk is counted at the prompt's
estimate (`quota.prompt_tokens`) and a completion token per event received.

Only this module finishes the meter, once the attempt that succeeded has
given it the provider's report to count (`usage.Meter.report`: the `Answer`, or
the `Upstream` that started). A whole answer is metered when it returns. A
stream is metered when it ends, however it ends: a caller who hangs up midway
is recorded with what the provider had counted so far.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from . import telemetry
from .catalog import Catalog
from .domain import Caller, LLMModel, Operation
from .errors import CLIENT_CLOSED_STATUS, GatewayError, UpstreamTimeout
from .limits import Admission, Limiter
from .providers.base import Answer, Attempt, Request, Upstream
from .providers.mapper import ProviderCall, load_litellm_for
from .quota import prompt_tokens, worst_case
from .routing import RETRYABLE, Router, health_key
from .usage import Meter, UsageRecorder
from .wire import Event

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """Time budgets: the whole request; per attempt, a stream's first event and a
    whole answer's first byte (it comes when the provider has produced the answer).
    An attempt's connection has its own budget, kept by the HTTP clients
    (`providers.mapper.ProviderCall.connect_seconds`)."""

    request_seconds: float = 230.0
    first_byte_seconds: float = 60.0
    whole_first_byte_seconds: float = 120.0


class Calls:
    """The route step of every use case: the `Call` for a caller's request."""

    def __init__(
        self,
        catalog: Catalog,
        router: Router,
        recorder: UsageRecorder,
        limiter: Limiter,
        limits: Limits | None = None,
    ):
        self.catalog = catalog
        self.router = router
        self.recorder = recorder
        self.limiter = limiter
        self.limits = limits or Limits()

    async def route(self, request_id: str, caller: Caller, request: Request) -> Call:
        """The call for the caller's model for the request's operation: it and
        its usable fallbacks (those the cached catalog holds), a meter and a
        deadline. The meter and the deadline start once LiteLLM is loaded, if
        a candidate needs it (`providers.mapper.load_litellm_for`): the import
        is the gateway's cost, not the call's. A caller with limits is admitted
        last (refused before any upstream call); one without pays nothing for them."""
        candidates = await self.catalog.models_for(caller.project, request.model, request.operation)
        await load_litellm_for(candidates, request.operation)
        meter = Meter(
            self.recorder,
            request_id=request_id,
            project=caller.project,
            model=candidates[0],
            operation=request.operation.value,
            stream=request.stream,
        )
        admission = None
        if caller.limits:
            produces_text = request.operation is not Operation.EMBEDDINGS
            worst = worst_case(request.body, candidates, produces_text)
            admission = await self.limiter.admit(caller, request_id, worst)
        deadline = asyncio.get_running_loop().time() + self.limits.request_seconds
        return Call(self.router, candidates, meter, deadline, self.limits, admission)


class Call:
    """The requested model then its fallbacks, the meter and the deadline of one request."""

    def __init__(
        self,
        router: Router,
        candidates: list[LLMModel],
        meter: Meter,
        deadline: float,
        limits: Limits,
        admission: Admission | None = None,
    ):
        self.router = router
        self.candidates = candidates
        self.meter = meter
        self.deadline = deadline
        self.limits = limits
        #: The caller's reservations against its budgets and rate limits, settled when the meter finishes.
        self.admission = admission
        if admission is not None:
            meter.observers.append(_settle(admission))

    def headers(self) -> dict[str, str]:
        """The x-ratelimit headers of the caller's limits (none without limits)."""
        return self.admission.headers() if self.admission is not None else {}

    async def whole(self, request: Request) -> tuple[LLMModel, Any]:
        """The model that answered and its answer's body; metered. An attempt
        without its answer within the first-byte budget is a timeout, so the
        next deployment is tried."""

        async def answered(model: LLMModel, call: ProviderCall) -> Answer[Any]:
            try:
                async with asyncio.timeout(self.limits.whole_first_byte_seconds):
                    return await call.transport.whole(model, call, request)
            except TimeoutError:
                raise UpstreamTimeout(f"Model '{model.id}' did not start answering in time.") from None

        model, answer = await self._run(answered)
        self.meter.report = answer
        self.meter.finish(200)
        return model, answer.body

    async def stream(self, request: Request) -> tuple[LLMModel, AsyncGenerator[Event, None]]:
        """The model whose stream started and its events; metered when the stream
        ends (a stream the provider ends before any event, as soon as that is known)."""

        ended_at_once = False  # the provider ended the stream before its first event

        async def started(model: LLMModel, call: ProviderCall) -> AsyncGenerator[Event, None]:
            nonlocal ended_at_once
            first_byte_by = min(self.deadline, asyncio.get_running_loop().time() + self.limits.first_byte_seconds)
            try:
                async with asyncio.timeout_at(first_byte_by):
                    upstream = await call.transport.stream(model, call, request)
                    events = self._events(model, call, upstream, request)
                    try:
                        first = await anext(events)
                    except StopAsyncIteration:
                        ended_at_once = True
                    except BaseException:
                        await events.aclose()
                        raise
                    self.meter.report = upstream  # this attempt started: the meter counts what its provider reports
                    if ended_at_once:
                        return events
            except TimeoutError:
                raise UpstreamTimeout(f"Model '{model.id}' did not start answering in time.") from None
            return _chain(first, events)

        model, events = await self._run(started, healthy_on_return=False)
        if ended_at_once:  # the caller gets an empty stream: a success without tokens
            self.meter.finish(200)
        return model, events

    async def _run(self, attempt: Attempt[T], healthy_on_return: bool = True) -> tuple[LLMModel, T]:
        """Run `attempt` on the deployments and fallbacks within the deadline;
        a failure is metered here, a success by the caller of `_run`."""
        remaining = self.deadline - asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(remaining):
                model, result = await self.router.run(
                    self.candidates, telemetry.traced_attempts(attempt, self.meter), healthy_on_return=healthy_on_return
                )
        except TimeoutError:
            self.meter.finish(UpstreamTimeout.status)
            model_id = self.candidates[0].id
            raise UpstreamTimeout(f"Model '{model_id}' did not answer within the request's time budget.") from None
        except GatewayError as error:
            self.meter.finish(error.status)
            error.headers = self.headers() | error.headers
            raise
        except asyncio.CancelledError:
            self.meter.finish(CLIENT_CLOSED_STATUS)
            raise
        except Exception:
            self.meter.finish(500)
            raise
        self.meter.model = model
        return model, result

    async def _events(
        self, model: LLMModel, call: ProviderCall, upstream: Upstream, request: Request
    ) -> AsyncGenerator[Event, None]:
        """`upstream`'s events, each read within the deadline. Once one has been
        sent, the meter is finished when the stream ends, with the status the
        caller saw (one that ends before its first event is `stream`'s to finish,
        once the attempt is known to have succeeded).
        The deployment's health is settled then too: healthy when the stream
        was read to its end, one failure more when the provider broke it off."""
        deployment = health_key(model, call.deployment)
        reads = aiter(upstream.events())
        sent = 0
        status = CLIENT_CLOSED_STATUS
        try:
            while True:
                try:
                    async with asyncio.timeout_at(self.deadline):  # no task per read, unlike wait_for
                        event = await anext(reads)
                except StopAsyncIteration:
                    break
                except TimeoutError:  # the request's budget, not the deployment, ran out
                    raise UpstreamTimeout(
                        f"Model '{model.id}' did not finish within the request's time budget."
                    ) from None
                except RETRYABLE as error:
                    if sent:  # else the router counts it, and tries the next deployment
                        self.router.health.failed(deployment, error)
                    raise
                if event is not None:
                    sent += 1
                    yield event
            status = 200
            self.router.health.succeeded(deployment)
        except GatewayError as error:
            status = error.status
            raise
        except Exception:
            status = 500
            raise
        finally:
            aclose = getattr(reads, "aclose", None)
            if aclose is not None:
                await aclose()
            await upstream.close(status == 200)
            if sent and not upstream.usage:  # the caller left before the usage chunk: what it received
                usage = {"prompt_tokens": prompt_tokens(request.body), "completion_tokens": sent}
                self.meter.report = Answer(None, usage, upstream.model)
            if sent:
                self.meter.finish(status)


def _settle(admission: Admission) -> Callable[[Meter, int], None]:
    """The meter's observer that settles `admission` at the call's real cost (a failed call's is nothing)."""

    def settle(meter: Meter, status: int) -> None:
        cost = meter.model.calculate_cost(meter.prompt_tokens, meter.completion_tokens)
        admission.settle(meter.prompt_tokens, meter.completion_tokens, cost)

    return settle


async def _chain(first: Event, rest: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        await rest.aclose()
