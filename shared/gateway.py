"""The gateway's use cases: one async method per operation.

Each one resolves the model the caller may use for the operation, builds the
LiteLLM call from the catalog entry, calls it, and returns an OpenAI-shaped
result. Azure OpenAI chat completions skip LiteLLM: the caller's body is
relayed (`azure_openai.py`) and the provider's bytes come back (`wire.py`).
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from . import azure_openai, payloads, telemetry, wire
from .catalog import Catalog
from .domain import Caller, LLMModel, Operation, Provider
from .errors import GatewayError, InvalidRequest, ModelNotFound, UnsupportedOperation, UpstreamTimeout
from .http import CLIENT_CLOSED_STATUS, Content, EventStream, Framed, Inbound, JSONResult
from .llm import litellm
from .management import Management
from .projects import Authenticator
from .providers import AzureChatEndpoint, ProviderCall, relays_chat
from .routing import Router
from .upstream import translate
from .usage import Meter, UsageRecorder
from .vertex import VertexImagen

T = TypeVar("T")
Event = tuple[str | None, Any]
#: Tries one deployment of one model; raises a gateway error when it fails.
Attempt = Callable[[LLMModel, ProviderCall], Awaitable[T]]
ToEvent = Callable[[Any, LLMModel, "Routed"], Event | None]


@dataclass(frozen=True)
class Limits:
    """Time budgets: the whole request, and a stream's first event."""

    request_seconds: float = 230.0
    first_byte_seconds: float = 60.0


@dataclass(frozen=True)
class Relayed:
    """A relayed chat completion: the bytes the caller gets, and what the gateway reads of them."""

    body: bytes
    #: The provider's model (telemetry's `gen_ai.response.model`) and token counts (the meter's).
    model: str | None
    usage: dict[str, Any] | None


@dataclass(frozen=True)
class Routed:
    """A call on its way: the requested model then its fallbacks, its meter, its deadline."""

    candidates: list[LLMModel]
    meter: Meter
    deadline: float


ANSWERED_BY_HEADER = "x-gateway-model"

#: Room for the form fields around an audio upload of the maximum size.
MULTIPART_OVERHEAD = 64 * 1024


class Gateway:
    def __init__(
        self,
        catalog: Catalog,
        router: Router,
        authenticator: Authenticator,
        management: Management,
        recorder: UsageRecorder,
        imagen: VertexImagen,
        environment: str,
        limits: Limits = Limits(),
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.limits = limits
        self.catalog = catalog
        self.router = router
        self.authenticator = authenticator
        self.management = management
        self.recorder = recorder
        self.imagen = imagen
        self.environment = environment
        self._closers = closers
        self.azure_openai = azure_openai.AzureOpenAI()

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Write the queued usage records (within `grace_seconds`) and release
        the clients the gateway opened (at shutdown)."""
        await self.recorder.close(grace_seconds)
        await self.imagen.close()
        await self.azure_openai.close()
        for close in self._closers:
            await close()

    async def health(self, inbound: Inbound) -> JSONResult:
        return JSONResult({"status": "healthy", "environment": self.environment})

    async def list_models(self, inbound: Inbound) -> JSONResult:
        caller = await self._caller(inbound)
        models = [
            _model_object(model)
            for model in await self.catalog.entries()
            if model.is_available_for_project(caller.project)
        ]
        return JSONResult({"object": "list", "data": sorted(models, key=lambda m: m["id"])})

    async def get_model(self, inbound: Inbound) -> JSONResult:
        caller = await self._caller(inbound)
        return JSONResult(_model_object(await self._visible_model(caller, inbound.path_param("model_id"))))

    async def chat_completions(self, inbound: Inbound) -> JSONResult | Content | EventStream:
        caller = await self._caller(inbound)
        body = await inbound.json(payloads.chat_completion)
        stream = bool(body.get("stream"))
        routed = await self._route(
            inbound, caller, body["model"], Operation.CHAT_COMPLETION, stream=stream, relayed=relays_chat
        )
        arguments = payloads.litellm_arguments(body, payloads.CHAT_COMPLETION_FIELDS)
        if not stream:
            through_litellm = self._litellm("acompletion", arguments)

            async def whole(model: LLMModel, call: ProviderCall) -> Any:
                if call.azure_chat is None:
                    return await through_litellm(model, call)
                return await self._relay_whole(call.azure_chat, body, model, call)

            model, response = await self._call(routed, whole)
            if isinstance(response, Relayed):
                return Content(response.body, "application/json", headers=_answered_by(model))
            return _json(wire.chat_completion(response, model.id), model)
        caller_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        stream_options = (body.get("stream_options") or {}) | {"include_usage": True}
        arguments["stream_options"] = stream_options
        through_litellm_stream = self._litellm_stream(
            "acompletion", arguments, routed, _chat_chunks(caller_wants_usage)
        )
        upstream_body = body | {"stream_options": stream_options}

        async def streamed(model: LLMModel, call: ProviderCall) -> AsyncGenerator[Event, None]:
            if call.azure_chat is None:
                return await through_litellm_stream(model, call)
            chunks = wire.RelayedChunks(model.id, caller_wants_usage)
            return await self._relay_stream(call.azure_chat, upstream_body, model, call, routed, chunks)

        model, events = await self._call(routed, streamed)
        return EventStream(events, headers=_answered_by(model))

    async def _relay_whole(
        self, endpoint: AzureChatEndpoint, body: dict[str, Any], model: LLMModel, call: ProviderCall
    ) -> Relayed:
        """A chat completion relayed to Azure OpenAI, answered whole."""
        response = await self.azure_openai.send(endpoint, body, model.id, call.secrets)
        raw, parsed = wire.relayed_completion(await azure_openai.read_whole(response, model.id), model.id)
        usage = parsed.get("usage")
        return Relayed(raw, parsed.get("model"), usage if isinstance(usage, dict) else None)

    async def _relay_stream(
        self,
        endpoint: AzureChatEndpoint,
        body: dict[str, Any],
        model: LLMModel,
        call: ProviderCall,
        routed: Routed,
        chunks: wire.RelayedChunks,
    ) -> AsyncGenerator[Event, None]:
        """A chat stream relayed to Azure OpenAI, once it has started (see `_started`)."""

        async def open_events() -> AsyncGenerator[Event, None]:
            response = await self.azure_openai.send(endpoint, body, model.id, call.secrets)
            return _relayed_stream(response, model, routed, chunks)

        return await self._started(model, routed, open_events)

    async def embeddings(self, inbound: Inbound) -> JSONResult:
        caller = await self._caller(inbound)
        body = await inbound.json(payloads.embedding)
        routed = await self._route(inbound, caller, body["model"], Operation.EMBEDDINGS)
        arguments = payloads.litellm_arguments(body, payloads.EMBEDDING_FIELDS)
        llm = await litellm()

        async def attempt(model: LLMModel, call: ProviderCall) -> dict[str, Any]:
            # LiteLLM refuses encoding_format for Vertex, ignores it for mocks: ask for floats, encode them here.
            encode_here = model.provider is not Provider.AZURE and arguments.get("encoding_format") == "base64"
            own = {k: v for k, v in arguments.items() if not (encode_here and k == "encoding_format")}
            response = await _translated(model, call, llm.aembedding(**call.embedding_arguments(own)))
            routed.meter.count(response.usage)
            payload = wire.embeddings(response, model.id)
            return _as_base64(payload) if encode_here else payload

        model, payload = await self._call(routed, attempt)
        return _json(payload, model)

    async def image_generations(self, inbound: Inbound) -> JSONResult:
        caller = await self._caller(inbound)
        body = await inbound.json(payloads.image_generation)
        routed = await self._route(inbound, caller, body["model"], Operation.IMAGES)
        arguments = payloads.litellm_arguments(body, payloads.IMAGE_FIELDS)
        llm = await litellm()

        async def attempt(model: LLMModel, call: ProviderCall) -> dict[str, Any]:
            if model.provider is Provider.GOOGLE:
                return await self.imagen.generate(model.id, call.deployment.code, call.arguments, body)
            response = await _translated(model, call, llm.aimage_generation(**(arguments | call.arguments)))
            return wire.images(response)

        model, payload = await self._call(routed, attempt)
        return _json(payload, model)

    async def speech(self, inbound: Inbound) -> Content:
        caller = await self._caller(inbound)
        body = await inbound.json(payloads.speech)
        routed = await self._route(inbound, caller, body["model"], Operation.AUDIO_TTS)
        arguments = payloads.litellm_arguments(body, payloads.SPEECH_FIELDS)
        model, response = await self._call(routed, self._litellm("aspeech", arguments))
        media_type = payloads.SPEECH_FORMATS[body.get("response_format") or "mp3"]
        return Content(response.content, media_type, headers=_answered_by(model))

    async def transcriptions(self, inbound: Inbound) -> JSONResult | Content:
        caller = await self._caller(inbound)
        fields = payloads.transcription(await inbound.form(payloads.MAX_AUDIO_BYTES + MULTIPART_OVERHEAD))
        routed = await self._route(inbound, caller, fields["model"], Operation.AUDIO_STT)
        arguments = payloads.litellm_arguments(fields, payloads.TRANSCRIPTION_FIELDS)
        arguments.pop("extra_body", None)  # a multipart upload has no JSON body to extend
        llm = await litellm()

        async def attempt(model: LLMModel, call: ProviderCall) -> Any:
            # LiteLLM ignores api_version for Azure transcriptions; a client of the gateway's carries it.
            client = {"client": self.router.providers.azure_client(call)} if model.provider is Provider.AZURE else {}
            return await _translated(model, call, llm.atranscription(**(arguments | call.arguments | client)))

        model, response = await self._call(routed, attempt)
        if fields.get("response_format") in ("text", "srt", "vtt"):
            return Content(response.text.encode(), "text/plain; charset=utf-8", headers=_answered_by(model))
        return _json(wire.transcription(response), model)

    async def responses(self, inbound: Inbound) -> JSONResult | EventStream:
        caller = await self._caller(inbound)
        body = await inbound.json(payloads.responses)
        stream = bool(body.get("stream"))
        routed = await self._route(inbound, caller, body["model"], Operation.RESPONSES, stream=stream)
        if stream and routed.candidates[0].provider is Provider.MOCK:
            raise InvalidRequest(
                f"Model '{routed.candidates[0].id}' is a Mock model: it answers the Responses API whole. "
                "Set 'stream' to false.",
                param="stream",
            )
        arguments = payloads.litellm_arguments(body, payloads.RESPONSES_FIELDS)
        if not stream:
            model, response = await self._call(routed, self._litellm("aresponses", arguments))
            return _json(wire.response(response, model.id), model)
        attempt = self._litellm_stream("aresponses", arguments, routed, _response_event)
        model, events = await self._call(routed, attempt)
        return EventStream(events, headers=_answered_by(model), done_marker=False)

    async def _route(
        self,
        inbound: Inbound,
        caller: Caller,
        model_id: str,
        operation: Operation,
        *,
        stream: bool = False,
        relayed: Callable[[LLMModel], bool] = lambda model: False,
    ) -> Routed:
        """The caller's model for `operation` and its usable fallbacks, with a meter
        and a deadline. The deadline starts once LiteLLM is loaded, if a candidate
        the gateway does not relay needs it: its import (seconds, once per process)
        is the gateway's cost, never the caller's time budget."""
        model = await self._model_for(caller, model_id, operation)
        candidates = [model]
        for fallback_id in model.fallbacks:
            fallback = await self.catalog.find(fallback_id)
            if (
                fallback is not None
                and fallback.is_available_for_project(caller.project)
                and (fallback.supports_operation(operation))
            ):
                candidates.append(fallback)
        meter = Meter(
            self.recorder,
            request_id=inbound.request_id,
            project=caller.project,
            model=model,
            operation=operation.value,
            stream=stream,
        )
        if not all(relayed(candidate) for candidate in candidates):
            await litellm()
        return Routed(candidates, meter, asyncio.get_running_loop().time() + self.limits.request_seconds)

    def _litellm(self, function: str, arguments: dict[str, Any]) -> Attempt[Any]:
        """An attempt that calls LiteLLM's `function` with one deployment's credentials."""

        async def attempt(model: LLMModel, call: ProviderCall) -> Any:
            llm = await litellm()
            return await _translated(model, call, getattr(llm, function)(**call.keyword_arguments(arguments)))

        return attempt

    def _litellm_stream(
        self, function: str, arguments: dict[str, Any], routed: Routed, to_event: ToEvent
    ) -> Attempt[AsyncGenerator[Event, None]]:
        """An attempt that opens a LiteLLM stream, once it has started (see `_started`)."""

        async def attempt(model: LLMModel, call: ProviderCall) -> AsyncGenerator[Event, None]:
            llm = await litellm()

            async def open_events() -> AsyncGenerator[Event, None]:
                stream = await _translated(model, call, getattr(llm, function)(**call.keyword_arguments(arguments)))
                return _relay(stream, model, call, to_event, routed)

            return await self._started(model, routed, open_events)

        return attempt

    async def _started(
        self, model: LLMModel, routed: Routed, open_events: Callable[[], Awaitable[AsyncGenerator[Event, None]]]
    ) -> AsyncGenerator[Event, None]:
        """The events `open_events` opens, once the first has arrived (within the
        first-byte budget), so a stream that fails to start can still move on to
        another deployment."""
        first_byte_by = min(routed.deadline, asyncio.get_running_loop().time() + self.limits.first_byte_seconds)
        try:
            async with asyncio.timeout_at(first_byte_by):
                events = await open_events()
                try:
                    first = await anext(events)
                except StopAsyncIteration:
                    return events
                except BaseException:
                    await events.aclose()
                    raise
        except TimeoutError:
            raise UpstreamTimeout(f"Model '{model.id}' did not start answering in time.") from None
        return _chain(first, events)

    async def _call(self, routed: Routed, attempt: Attempt[T]) -> tuple[LLMModel, T]:
        """Run `attempt` on the deployments and fallbacks within the request's
        budget; meter the outcome (a stream's end is metered by `_relay`)."""
        remaining = routed.deadline - asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(remaining):
                traced = telemetry.traced_attempts(attempt, routed.meter)
                model, result = await self.router.run(routed.candidates, traced)
        except TimeoutError:
            routed.meter.finish(UpstreamTimeout.status)
            model_id = routed.candidates[0].id
            raise UpstreamTimeout(f"Model '{model_id}' did not answer within the request's time budget.") from None
        except GatewayError as error:
            routed.meter.finish(error.status)
            raise
        except asyncio.CancelledError:
            routed.meter.finish(CLIENT_CLOSED_STATUS)
            raise
        except Exception:
            routed.meter.finish(500)
            raise
        routed.meter.model = model
        if not routed.meter.stream:
            usage = getattr(result, "usage", None)
            if usage is not None:
                routed.meter.count(usage)
            routed.meter.finish(200)
        return model, result

    async def _caller(self, inbound: Inbound) -> Caller:
        caller = await self.authenticator.caller(inbound.headers)
        telemetry.set_project(caller.project)
        return caller

    async def _visible_model(self, caller: Caller, model_id: str) -> LLMModel:
        model = await self.catalog.find(model_id)
        if model is None or not model.is_available_for_project(caller.project):
            raise ModelNotFound(model_id)
        return model

    async def _model_for(self, caller: Caller, model_id: str, operation: Operation) -> LLMModel:
        model = await self._visible_model(caller, model_id)
        if not model.supports_operation(operation):
            raise UnsupportedOperation(
                f"Model '{model.id}' does not support the operation '{operation.value}'. "
                f"It supports: {', '.join(op.value for op in model.operations) or 'nothing'}.",
                param="model",
            )
        return model


def _model_object(model: LLMModel) -> dict[str, Any]:
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.provider.value.lower(),
        "name": model.name,
        "operations": [operation.value for operation in model.operations],
    }


def _as_base64(payload: dict[str, Any]) -> dict[str, Any]:
    """Embeddings as OpenAI's base64 encoding: little-endian float32 arrays."""
    for item in payload.get("data", []):
        vector = item["embedding"]
        item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return payload


async def _translated(model: LLMModel, call: ProviderCall, pending: Awaitable[T]) -> T:
    """Await a provider call; its failure becomes a gateway error."""
    try:
        return await pending
    except Exception as exc:
        raise translate(exc, model.id, call.secrets) or exc from None


async def _relay(
    stream: Any, model: LLMModel, call: ProviderCall, to_event: ToEvent, routed: Routed
) -> AsyncGenerator[Event, None]:
    """The provider's stream as SSE events, its failures as gateway errors,
    each item awaited within the request's budget.

    Once the stream has started, its usage is recorded when it ends, however
    it ends: a caller who leaves midway is recorded with what was counted.
    """
    items = aiter(stream)
    started = False
    status = CLIENT_CLOSED_STATUS
    try:
        while True:
            try:
                async with asyncio.timeout_at(routed.deadline):  # no task per item, unlike wait_for
                    item = await anext(items)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise UpstreamTimeout(f"Model '{model.id}' did not finish within the request's time budget.") from None
            event = to_event(item, model, routed)
            if event is not None:
                started = True
                yield event
        status = 200
    except GatewayError as error:
        status = error.status
        raise
    except Exception as exc:
        translated = translate(exc, model.id, call.secrets)
        status = translated.status if translated else 500
        raise translated or exc from None
    finally:
        if started:
            routed.meter.finish(status)
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


async def _relayed_stream(
    response: Any, model: LLMModel, routed: Routed, chunks: wire.RelayedChunks
) -> AsyncGenerator[Event, None]:
    """A relayed stream's kept chunks, one frame per read from the provider, each
    read within the request's budget; metered and the upstream response closed
    however it ends (a caller who leaves midway is recorded with what was counted)."""
    reads = azure_openai.sse_data(response, model.id)
    started = False
    status = CLIENT_CLOSED_STATUS
    try:
        while True:
            try:
                async with asyncio.timeout_at(routed.deadline):
                    events = await anext(reads)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise UpstreamTimeout(f"Model '{model.id}' did not finish within the request's time budget.") from None
            frame = chunks.frame(events)
            if frame:
                started = True
                yield None, Framed(frame)
        status = 200
    except GatewayError as error:
        status = error.status
        raise
    except Exception:
        status = 500
        raise
    finally:
        if chunks.usage:
            routed.meter.count(chunks.usage)
        if started:
            routed.meter.finish(status)
        await reads.aclose()
        if status == 200:
            response.release()
        else:
            response.close()


def _chat_chunks(caller_wants_usage: bool) -> ToEvent:
    """Chunks as the caller sees them (see `wire.ChatStream`). The gateway always
    asks for usage, and meters it whether or not the caller gets it."""
    stream = wire.ChatStream(caller_wants_usage)

    def convert(chunk: Any, model: LLMModel, routed: Routed) -> Event | None:
        usage = getattr(chunk, "usage", None)
        if usage:
            routed.meter.count(usage)
        shaped = stream.chunk(chunk, model.id)
        return None if shaped is None else (None, shaped)

    return convert


def _response_event(event: Any, model: LLMModel, routed: Routed) -> Event:
    payload = wire.response_event(event, model.id)
    usage = (payload.get("response") or {}).get("usage")
    if usage:
        routed.meter.count(usage)
    return payload.get("type"), payload


def _answered_by(model: LLMModel) -> dict[str, str]:
    """The header naming the catalog model that answered (a fallback, perhaps)."""
    return {ANSWERED_BY_HEADER: model.id}


def _json(payload: dict[str, Any], model: LLMModel) -> JSONResult:
    return JSONResult(payload, headers=_answered_by(model))


async def _chain(first: Event, rest: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        await rest.aclose()
