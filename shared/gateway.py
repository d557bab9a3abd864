"""The gateway's use cases: one async method per operation.

Each one resolves the model the caller may use for the operation, builds the
LiteLLM call from the catalog entry, calls it, and returns an OpenAI-shaped
result.
"""

from __future__ import annotations

import base64
import struct

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import payloads
from .catalog import Catalog
from .domain import Caller, LLMModel, Operation, Provider
from .errors import ModelNotFound, UnsupportedOperation
from .http import Content, EventStream, Inbound, JSONResult
from .llm import litellm
from .management import Management
from .projects import Authenticator
from .providers import ProviderCall, ProviderMapper
from .upstream import translate
from .usage import CLIENT_CLOSED_STATUS, Meter, UsageRecorder
from .vertex import VertexImagen


@dataclass(frozen=True)
class Routed:
    """A call on its way to a provider: the model, its credentials, its meter."""

    model: LLMModel
    call: ProviderCall
    meter: Meter


#: Room for the form fields around an audio upload of the maximum size.
MULTIPART_OVERHEAD = 64 * 1024


class Gateway:
    def __init__(
        self,
        catalog: Catalog,
        providers: ProviderMapper,
        authenticator: Authenticator,
        management: Management,
        recorder: UsageRecorder,
        imagen: VertexImagen,
        environment: str,
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.catalog = catalog
        self.providers = providers
        self.authenticator = authenticator
        self.management = management
        self.recorder = recorder
        self.imagen = imagen
        self.environment = environment
        self._closers = closers

    async def close(self) -> None:
        """Release the clients the gateway opened (at shutdown)."""
        await self.recorder.close()
        await self.imagen.close()
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

    async def chat_completions(self, inbound: Inbound) -> JSONResult | EventStream:
        body = payloads.chat_completion(await inbound.json())
        stream = bool(body.get("stream"))
        routed = await self._route(inbound, body["model"], Operation.CHAT_COMPLETION, stream=stream)
        arguments = payloads.litellm_arguments(body, payloads.CHAT_COMPLETION_FIELDS)
        if not stream:
            response = await self._invoke("acompletion", routed, arguments)
            return JSONResult(_for_caller(response.model_dump(), routed.model))
        caller_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        arguments["stream_options"] = (body.get("stream_options") or {}) | {"include_usage": True}
        response = await self._invoke("acompletion", routed, arguments)
        return EventStream(await _primed(_relay(response, routed, _chat_chunks(caller_wants_usage))))

    async def embeddings(self, inbound: Inbound) -> JSONResult:
        body = payloads.embedding(await inbound.json())
        routed = await self._route(inbound, body["model"], Operation.EMBEDDINGS)
        arguments = payloads.litellm_arguments(body, payloads.EMBEDDING_FIELDS)
        encode_here = routed.model.provider is Provider.GOOGLE and arguments.get("encoding_format") == "base64"
        if encode_here:  # LiteLLM refuses encoding_format for Vertex; floats come back, encoded below
            del arguments["encoding_format"]
        response = await self._invoke("aembedding", routed, arguments)
        payload = _for_caller(response.model_dump(exclude_none=True), routed.model)
        return JSONResult(_as_base64(payload) if encode_here else payload)

    async def image_generations(self, inbound: Inbound) -> JSONResult:
        body = payloads.image_generation(await inbound.json())
        routed = await self._route(inbound, body["model"], Operation.IMAGES)
        model = routed.model
        if model.provider is Provider.GOOGLE:
            pending = self.imagen.generate(model.id, model.code, routed.call.arguments, body)
            return JSONResult(await self._metered(routed, pending))
        arguments = payloads.litellm_arguments(body, payloads.IMAGE_FIELDS)
        response = await self._invoke("aimage_generation", routed, arguments)
        return JSONResult(_images_for_caller(response.model_dump(exclude_none=True)))

    async def speech(self, inbound: Inbound) -> Content:
        body = payloads.speech(await inbound.json())
        routed = await self._route(inbound, body["model"], Operation.AUDIO_TTS)
        arguments = payloads.litellm_arguments(body, payloads.SPEECH_FIELDS)
        response = await self._invoke("aspeech", routed, arguments)
        media_type = payloads.SPEECH_FORMATS[body.get("response_format") or "mp3"]
        return Content(response.content, media_type)

    async def transcriptions(self, inbound: Inbound) -> JSONResult | Content:
        fields = payloads.transcription(await inbound.form(payloads.MAX_AUDIO_BYTES + MULTIPART_OVERHEAD))
        routed = await self._route(inbound, fields["model"], Operation.AUDIO_STT)
        arguments = payloads.litellm_arguments(fields, payloads.TRANSCRIPTION_FIELDS)
        arguments.pop("extra_body", None)  # a multipart upload has no JSON body to extend
        response = await self._invoke("atranscription", routed, arguments)
        if fields.get("response_format") in ("text", "srt", "vtt"):
            return Content(response.text.encode(), "text/plain; charset=utf-8")
        payload = response.model_dump(exclude_none=True)
        return JSONResult({key: value for key, value in payload.items() if not key.startswith("_")})

    async def responses(self, inbound: Inbound) -> JSONResult | EventStream:
        body = payloads.responses(await inbound.json())
        stream = bool(body.get("stream"))
        routed = await self._route(inbound, body["model"], Operation.RESPONSES, stream=stream)
        arguments = payloads.litellm_arguments(body, payloads.RESPONSES_FIELDS)
        response = await self._invoke("aresponses", routed, arguments)
        if not stream:
            return JSONResult(_for_caller(response.model_dump(exclude_none=True), routed.model))
        return EventStream(await _primed(_relay(response, routed, _response_event)), done_marker=False)

    async def _route(
        self, inbound: Inbound, model_id: str, operation: Operation, *, stream: bool = False
    ) -> Routed:
        """The caller's model for `operation`, how to call its provider, and its meter."""
        caller = await self._caller(inbound)
        model = await self._model_for(caller, model_id, operation)
        meter = Meter(
            self.recorder,
            request_id=inbound.request_id,
            project=caller.project,
            model=model,
            operation=operation.value,
            stream=stream,
        )
        return Routed(model, await self.providers.call_for(model), meter)

    async def _invoke(self, function: str, routed: Routed, arguments: dict[str, Any]) -> Any:
        """Call LiteLLM's `function` with the caller's arguments and the model's credentials.

        A plain call is metered here; a stream is metered by `_relay` when it ends.
        """
        llm = await litellm()
        return await self._metered(routed, getattr(llm, function)(**(arguments | routed.call.arguments)))

    async def _metered(self, routed: Routed, pending: Awaitable[Any]) -> Any:
        """Await a provider call, translating its failure and metering it."""
        try:
            response = await pending
        except Exception as exc:
            error = translate(exc, routed.model.id, routed.call.secrets)
            routed.meter.finish(error.status if error else 500)
            raise error or exc
        if not routed.meter.stream:
            routed.meter.count(getattr(response, "usage", None))
            routed.meter.finish(200)
        return response

    async def _caller(self, inbound: Inbound) -> Caller:
        return await self.authenticator.caller(inbound.headers)

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


def _for_caller(payload: dict[str, Any], model: LLMModel) -> dict[str, Any]:
    """A provider payload as the caller sees it: named after the catalog model,
    without the fields LiteLLM adds (its own cost estimate, provider extras)."""
    payload["model"] = model.id
    payload.pop("provider_specific_fields", None)
    for choice in payload.get("choices") or ():
        choice.pop("provider_specific_fields", None)
    usage = payload.get("usage")
    if isinstance(usage, dict):
        usage.pop("cost", None)
    return payload


def _as_base64(payload: dict[str, Any]) -> dict[str, Any]:
    """Embeddings as OpenAI's base64 encoding: little-endian float32 arrays."""
    for item in payload.get("data", []):
        vector = item["embedding"]
        item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return payload


def _images_for_caller(payload: dict[str, Any]) -> dict[str, Any]:
    """The images and their usage; LiteLLM also echoes request settings (some it
    made up, such as a default size) that OpenAI's schema would misread."""
    images = {"created": payload.get("created"), "data": payload.get("data", [])}
    usage = payload.get("usage")
    if isinstance(usage, dict) and usage.get("total_tokens"):
        images["usage"] = usage
    return images


Event = tuple[str | None, Any]


async def _relay(
    stream: Any, routed: Routed, to_event: Callable[[Any, Routed], Event | None]
) -> AsyncGenerator[Event, None]:
    """The provider's stream as SSE events, its failures as gateway errors.

    Its usage is recorded when it ends, however it ends: a caller who leaves
    mid-stream is recorded with what was counted until then.
    """
    status = CLIENT_CLOSED_STATUS
    try:
        async for item in stream:
            event = to_event(item, routed)
            if event is not None:
                yield event
        status = 200
    except Exception as exc:
        error = translate(exc, routed.model.id, routed.call.secrets)
        status = error.status if error else 500
        raise error or exc
    finally:
        routed.meter.finish(status)


def _chat_chunks(caller_wants_usage: bool) -> Callable[[Any, Routed], Event | None]:
    """Chunks as the caller sees them. The gateway always asks for usage; the
    usage-only chunk is forwarded only to a caller who asked for it."""

    def convert(chunk: Any, routed: Routed) -> Event | None:
        payload = chunk.model_dump(exclude_none=True)
        usage = payload.get("usage")
        if usage:
            routed.meter.count(usage)
            if not caller_wants_usage:
                if not payload.get("choices"):
                    return None
                del payload["usage"]
        return None, _for_caller(payload, routed.model)

    return convert


def _response_event(event: Any, routed: Routed) -> Event:
    payload = event.model_dump(exclude_none=True)
    response = payload.get("response")
    if isinstance(response, dict):
        _for_caller(response, routed.model)
        if response.get("usage"):
            routed.meter.count(response["usage"])
    return payload.get("type"), payload


async def _primed(
    events: AsyncGenerator[Event, None],
) -> AsyncGenerator[Event, None]:
    """Wait for the first event now, so a failure to start is a plain HTTP error."""
    try:
        first = await anext(events)
    except StopAsyncIteration:
        return events
    return _chain(first, events)


async def _chain(
    first: Event, rest: AsyncGenerator[Event, None]
) -> AsyncGenerator[Event, None]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        await rest.aclose()
