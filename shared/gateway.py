"""The gateway's use cases: one async method per operation.

Each one reads the caller's request, routes it to the model the caller may
use for the operation (a `calls.Call`), runs the call with the attempt that
suits the provider, and shapes the result for the caller (`wire.py`).
Azure OpenAI chat completions and embeddings are relayed without LiteLLM
(`azure_openai.py`); Gemini and Claude chat completions on Vertex are
translated by LiteLLM's provider classes and sent by the gateway
(`translated.py`); every other call goes through LiteLLM
(`litellm_calls.py`).
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from . import azure_openai, litellm_calls, payloads, telemetry, translated, wire
from .calls import Answer, Call, Limits, Upstream
from .catalog import Catalog
from .domain import Caller, LLMModel, Operation, Provider
from .errors import InvalidRequest, ModelNotFound, UnsupportedOperation
from .http import Content, EventStream, Inbound, JSONResult
from .llm import litellm
from .management import Management
from .projects import Authenticator
from .providers import ProviderCall, mock_embeddings, relayed
from .routing import Router
from .usage import Meter, UsageRecorder
from .vertex import VertexImagen

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
        limits: Limits | None = None,
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.limits = limits or Limits()
        self.catalog = catalog
        self.router = router
        self.authenticator = authenticator
        self.management = management
        self.recorder = recorder
        self.imagen = imagen
        self.environment = environment
        self._closers = closers
        self.azure_openai = azure_openai.AzureOpenAI()
        self.vertex_chat = translated.VertexChat(imagen.tokens)

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Write the queued usage records (within `grace_seconds`) and release
        the clients the gateway opened (at shutdown)."""
        await self.recorder.close(grace_seconds)
        await self.imagen.close()
        await self.azure_openai.close()
        await self.vertex_chat.close()
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
        call = await self._route(
            inbound, caller, body["model"], Operation.CHAT_COMPLETION, stream=stream, relayed=relayed
        )
        arguments = payloads.litellm_arguments(body, payloads.CHAT_COMPLETION_FIELDS)
        if not stream:
            through_litellm = litellm_calls.whole("acompletion", arguments)

            async def whole(model: LLMModel, provider: ProviderCall) -> Answer[Any]:
                if provider.azure_relay is None:
                    if translated.serves(model, body):
                        return await self.vertex_chat.completion(model, provider, body)
                    return await through_litellm(model, provider)
                return await self.azure_openai.completion(provider.azure_relay, body, model.id)

            model, completion = await call.whole(whole)
            if isinstance(completion, bytes):
                return _relayed(completion, model)
            return _json(wire.chat_completion(completion, model.id), model)
        # The gateway always asks for the usage chunk, to meter it; the caller gets it only if asked.
        caller_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        stream_options = (body.get("stream_options") or {}) | {"include_usage": True}
        through_litellm_stream = litellm_calls.stream(
            "acompletion",
            arguments | {"stream_options": stream_options},
            lambda model_id: wire.ChatStream(model_id, caller_wants_usage),
        )
        upstream_body = body | {"stream_options": stream_options}

        async def streamed(model: LLMModel, provider: ProviderCall) -> Upstream:
            if provider.azure_relay is None:
                if translated.serves(model, body):
                    return await self.vertex_chat.stream(model, provider, body, caller_wants_usage)
                return await through_litellm_stream(model, provider)
            return await self.azure_openai.stream(provider.azure_relay, upstream_body, model.id, caller_wants_usage)

        model, events = await call.stream(streamed)
        return EventStream(events, headers=_answered_by(model))

    async def embeddings(self, inbound: Inbound) -> JSONResult | Content:
        caller = await self._caller(inbound)
        body = await inbound.json(payloads.embedding)
        call = await self._route(inbound, caller, body["model"], Operation.EMBEDDINGS, relayed=relayed)
        arguments = payloads.litellm_arguments(body, payloads.EMBEDDING_FIELDS)

        async def attempt(model: LLMModel, provider: ProviderCall) -> Answer[Any]:
            if provider.azure_relay is not None:
                return await self.azure_openai.embeddings(provider.azure_relay, body, model.id)
            # LiteLLM refuses encoding_format for Vertex, and a Mock answers floats: ask for floats, encode them here.
            encode_here = model.provider is not Provider.AZURE and arguments.get("encoding_format") == "base64"
            if provider.mock_embedding is not None:
                payload = mock_embeddings(provider.mock_embedding, body["input"], model.id)
                answer: Answer[Any] = Answer(payload, payload["usage"])
            else:
                own = {k: v for k, v in arguments.items() if not (encode_here and k == "encoding_format")}
                llm = await litellm()
                answer = await litellm_calls.answered(
                    model, provider, llm.aembedding(**provider.keyword_arguments(own))
                )
                answer = replace(answer, body=wire.embeddings(answer.body, model.id))
            return replace(answer, body=_as_base64(answer.body) if encode_here else answer.body)

        model, embedded = await call.whole(attempt)
        if isinstance(embedded, bytes):
            return _relayed(embedded, model)
        return _json(embedded, model)

    async def image_generations(self, inbound: Inbound) -> JSONResult:
        caller = await self._caller(inbound)
        body = await inbound.json(payloads.image_generation)
        call = await self._route(inbound, caller, body["model"], Operation.IMAGES)
        arguments = payloads.litellm_arguments(body, payloads.IMAGE_FIELDS)
        llm = await litellm()

        async def attempt(model: LLMModel, provider: ProviderCall) -> Answer[dict[str, Any]]:
            if model.provider is Provider.GOOGLE:
                own = provider.arguments | {"timeout": provider.http_timeout()}
                return Answer(await self.imagen.generate(model.id, provider.deployment.code, own, body))
            answer = await litellm_calls.answered(
                model, provider, llm.aimage_generation(**provider.keyword_arguments(arguments))
            )
            return replace(answer, body=wire.images(answer.body))

        model, payload = await call.whole(attempt)
        return _json(payload, model)

    async def speech(self, inbound: Inbound) -> Content:
        caller = await self._caller(inbound)
        body = await inbound.json(payloads.speech)
        call = await self._route(inbound, caller, body["model"], Operation.AUDIO_TTS)
        arguments = payloads.litellm_arguments(body, payloads.SPEECH_FIELDS)
        model, response = await call.whole(litellm_calls.whole("aspeech", arguments))
        media_type = payloads.SPEECH_FORMATS[body.get("response_format") or "mp3"]
        return Content(response.content, media_type, headers=_answered_by(model))

    async def transcriptions(self, inbound: Inbound) -> JSONResult | Content:
        caller = await self._caller(inbound)
        fields = payloads.transcription(await inbound.form(payloads.MAX_AUDIO_BYTES + MULTIPART_OVERHEAD))
        call = await self._route(inbound, caller, fields["model"], Operation.AUDIO_STT)
        arguments = payloads.litellm_arguments(fields, payloads.TRANSCRIPTION_FIELDS)
        arguments.pop("extra_body", None)  # a multipart upload has no JSON body to extend
        llm = await litellm()

        async def attempt(model: LLMModel, provider: ProviderCall) -> Answer[Any]:
            # LiteLLM ignores api_version for Azure transcriptions; a client of the gateway's carries it.
            azure = model.provider is Provider.AZURE
            client = {"client": self.router.providers.azure_client(provider)} if azure else {}
            return await litellm_calls.answered(
                model, provider, llm.atranscription(**(provider.keyword_arguments(arguments) | client))
            )

        model, response = await call.whole(attempt)
        if fields.get("response_format") in ("text", "srt", "vtt"):
            return Content(response.text.encode(), "text/plain; charset=utf-8", headers=_answered_by(model))
        return _json(wire.transcription(response), model)

    async def responses(self, inbound: Inbound) -> JSONResult | EventStream:
        caller = await self._caller(inbound)
        body = await inbound.json(payloads.responses)
        stream = bool(body.get("stream"))
        call = await self._route(inbound, caller, body["model"], Operation.RESPONSES, stream=stream)
        if stream and call.candidates[0].provider is Provider.MOCK:
            raise InvalidRequest(
                f"Model '{call.candidates[0].id}' is a Mock model: it answers the Responses API whole. "
                "Set 'stream' to false.",
                param="stream",
            )
        arguments = payloads.litellm_arguments(body, payloads.RESPONSES_FIELDS)
        if not stream:
            model, response = await call.whole(litellm_calls.whole("aresponses", arguments))
            return _json(wire.response(response, model.id), model)
        model, events = await call.stream(litellm_calls.stream("aresponses", arguments, wire.ResponseEvents))
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
    ) -> Call:
        """The call for the caller's model for `operation`: it and its usable
        fallbacks (those the cached catalog holds), a meter and a deadline. The
        deadline starts once LiteLLM is loaded, if a candidate the gateway does
        not relay needs it: its import (seconds, once per process) is the
        gateway's cost, never the caller's time budget."""
        model = await self._model_for(caller, model_id, operation)
        candidates = [model] + [
            fallback
            for fallback in self.catalog.fallbacks(model)
            if fallback.is_available_for_project(caller.project) and fallback.supports_operation(operation)
        ]
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
        deadline = asyncio.get_running_loop().time() + self.limits.request_seconds
        return Call(self.router, candidates, meter, deadline, self.limits)

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


def _answered_by(model: LLMModel) -> dict[str, str]:
    """The header naming the catalog model that answered (a fallback, perhaps)."""
    return {ANSWERED_BY_HEADER: model.id}


def _json(payload: dict[str, Any], model: LLMModel) -> JSONResult:
    return JSONResult(payload, headers=_answered_by(model))


def _relayed(body: bytes, model: LLMModel) -> Content:
    """A relayed JSON body, sent as the bytes `wire.py` kept of the provider's."""
    return Content(body, "application/json", headers=_answered_by(model))
