"""The gateway's use cases: one async method per operation.

Each one resolves the model the caller may use for the operation, builds the
LiteLLM call from the catalog entry, calls it, and returns an OpenAI-shaped
result.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any

from . import payloads
from .catalog import Catalog
from .domain import Caller, LLMModel, Operation
from .errors import ModelNotFound, UnsupportedOperation
from .http import Content, EventStream, Inbound, JSONResult
from .llm import litellm
from .projects import Authenticator
from .providers import ProviderCall, ProviderMapper
from .upstream import translate


#: Room for the form fields around an audio upload of the maximum size.
MULTIPART_OVERHEAD = 64 * 1024


class Gateway:
    def __init__(
        self,
        catalog: Catalog,
        providers: ProviderMapper,
        authenticator: Authenticator,
        environment: str,
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.catalog = catalog
        self.providers = providers
        self.authenticator = authenticator
        self.environment = environment
        self._closers = closers

    async def close(self) -> None:
        """Release the clients the gateway opened (at shutdown)."""
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
        model, call = await self._route(inbound, body["model"], Operation.CHAT_COMPLETION)
        arguments = payloads.litellm_arguments(body, payloads.CHAT_COMPLETION_FIELDS)
        response = await self._invoke("acompletion", model, call, arguments)
        if not body.get("stream"):
            return JSONResult(_for_caller(response.model_dump(), model))
        return EventStream(await _primed(_relay(response, model, call, _chat_chunk)))

    async def embeddings(self, inbound: Inbound) -> JSONResult:
        body = payloads.embedding(await inbound.json())
        model, call = await self._route(inbound, body["model"], Operation.EMBEDDINGS)
        arguments = payloads.litellm_arguments(body, payloads.EMBEDDING_FIELDS)
        response = await self._invoke("aembedding", model, call, arguments)
        return JSONResult(_for_caller(response.model_dump(exclude_none=True), model))

    async def image_generations(self, inbound: Inbound) -> JSONResult:
        body = payloads.image_generation(await inbound.json())
        model, call = await self._route(inbound, body["model"], Operation.IMAGES)
        arguments = payloads.litellm_arguments(body, payloads.IMAGE_FIELDS)
        response = await self._invoke("aimage_generation", model, call, arguments)
        return JSONResult(_images_for_caller(response.model_dump(exclude_none=True)))

    async def speech(self, inbound: Inbound) -> Content:
        body = payloads.speech(await inbound.json())
        model, call = await self._route(inbound, body["model"], Operation.AUDIO_TTS)
        arguments = payloads.litellm_arguments(body, payloads.SPEECH_FIELDS)
        response = await self._invoke("aspeech", model, call, arguments)
        media_type = payloads.SPEECH_FORMATS[body.get("response_format") or "mp3"]
        return Content(response.content, media_type)

    async def transcriptions(self, inbound: Inbound) -> JSONResult | Content:
        fields = payloads.transcription(await inbound.form(payloads.MAX_AUDIO_BYTES + MULTIPART_OVERHEAD))
        model, call = await self._route(inbound, fields["model"], Operation.AUDIO_STT)
        arguments = payloads.litellm_arguments(fields, payloads.TRANSCRIPTION_FIELDS)
        arguments.pop("extra_body", None)  # a multipart upload has no JSON body to extend
        response = await self._invoke("atranscription", model, call, arguments)
        if fields.get("response_format") in ("text", "srt", "vtt"):
            return Content(response.text.encode(), "text/plain; charset=utf-8")
        payload = response.model_dump(exclude_none=True)
        return JSONResult({key: value for key, value in payload.items() if not key.startswith("_")})

    async def responses(self, inbound: Inbound) -> JSONResult | EventStream:
        body = payloads.responses(await inbound.json())
        model, call = await self._route(inbound, body["model"], Operation.RESPONSES)
        arguments = payloads.litellm_arguments(body, payloads.RESPONSES_FIELDS)
        response = await self._invoke("aresponses", model, call, arguments)
        if not body.get("stream"):
            return JSONResult(_for_caller(response.model_dump(exclude_none=True), model))
        return EventStream(await _primed(_relay(response, model, call, _response_event)), done_marker=False)

    async def _route(self, inbound: Inbound, model_id: str, operation: Operation) -> tuple[LLMModel, ProviderCall]:
        """The caller's model for `operation`, and how to call its provider."""
        caller = await self._caller(inbound)
        model = await self._model_for(caller, model_id, operation)
        return model, await self.providers.call_for(model)

    async def _invoke(self, function: str, model: LLMModel, call: ProviderCall, arguments: dict[str, Any]) -> Any:
        """Call LiteLLM's `function` with the caller's arguments and the model's credentials."""
        llm = await litellm()
        try:
            return await getattr(llm, function)(**(arguments | call.arguments))
        except Exception as exc:
            raise translate(exc, model.id, call.secrets) or exc

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
    stream: Any, model: LLMModel, call: ProviderCall, to_event: Callable[[Any, LLMModel], Event]
) -> AsyncGenerator[Event, None]:
    """The provider's stream as SSE events, its failures as gateway errors."""
    try:
        async for item in stream:
            yield to_event(item, model)
    except Exception as exc:
        raise translate(exc, model.id, call.secrets) or exc


def _chat_chunk(chunk: Any, model: LLMModel) -> Event:
    return None, _for_caller(chunk.model_dump(exclude_none=True), model)


def _response_event(event: Any, model: LLMModel) -> Event:
    payload = event.model_dump(exclude_none=True)
    if isinstance(payload.get("response"), dict):
        _for_caller(payload["response"], model)
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
