"""The gateway's use cases: one async method per operation.

Each one reads parse → admit → route → call → shape: it parses the caller's
request (`payloads.py`), admits the caller (`projects.Authenticator`), routes
it to the model the caller may use for the operation (a `calls.Call`), calls
it (each deployment's transport, chosen when the catalog entry was mapped:
`providers/`), and shapes the result for the caller, as JSON, as the
provider's relayed bytes, or as a stream. No use case knows which provider
answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import payloads, telemetry
from .calls import Call, Limits
from .catalog import Catalog
from .domain import Caller, LLMModel, Operation
from .errors import ModelNotFound, UnsupportedOperation
from .http import Content, EventStream, Inbound, JSONResult
from .management import Management
from .projects import Authenticator
from .providers.base import Request
from .providers.mapper import load_litellm_for
from .routing import Router
from .stored_responses import ResponseHistory, replayed
from .usage import Meter, UsageRecorder

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
        environment: str,
        limits: Limits | None = None,
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
        *,
        history: ResponseHistory,
    ) -> None:
        self.limits = limits or Limits()
        self.catalog = catalog
        self.router = router
        self.authenticator = authenticator
        self.management = management
        self.recorder = recorder
        self.environment = environment
        self._closers = closers
        self.history = history

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Write the queued usage records (within `grace_seconds`) and release
        the clients the gateway was given (at shutdown)."""
        await self.recorder.close(grace_seconds)
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
        call = await self._route(inbound, caller, body["model"], Operation.CHAT_COMPLETION, stream=stream)
        arguments = payloads.litellm_arguments(body, payloads.CHAT_COMPLETION_FIELDS)
        if not stream:
            model, completion = await call.whole(Request(Operation.CHAT_COMPLETION, body, arguments))
            return _answer(completion, model)
        # The gateway always asks for the usage chunk, to meter it; the caller gets it only if asked.
        caller_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        stream_options = {"stream_options": (body.get("stream_options") or {}) | {"include_usage": True}}
        request = Request(
            Operation.CHAT_COMPLETION, body | stream_options, arguments | stream_options, caller_wants_usage
        )
        model, events = await call.stream(request)
        return EventStream(events, headers=_answered_by(model))

    async def embeddings(self, inbound: Inbound) -> JSONResult | Content:
        caller = await self._caller(inbound)
        body = await inbound.json(payloads.embedding)
        call = await self._route(inbound, caller, body["model"], Operation.EMBEDDINGS)
        arguments = payloads.litellm_arguments(body, payloads.EMBEDDING_FIELDS)
        model, embedded = await call.whole(Request(Operation.EMBEDDINGS, body, arguments))
        return _answer(embedded, model)

    async def image_generations(self, inbound: Inbound) -> JSONResult | Content:
        caller = await self._caller(inbound)
        body = await inbound.json(payloads.image_generation)
        call = await self._route(inbound, caller, body["model"], Operation.IMAGES)
        arguments = payloads.litellm_arguments(body, payloads.IMAGE_FIELDS)
        model, payload = await call.whole(Request(Operation.IMAGES, body, arguments))
        return _answer(payload, model)

    async def speech(self, inbound: Inbound) -> Content:
        caller = await self._caller(inbound)
        body = await inbound.json(payloads.speech)
        call = await self._route(inbound, caller, body["model"], Operation.AUDIO_TTS)
        arguments = payloads.litellm_arguments(body, payloads.SPEECH_FIELDS)
        model, audio = await call.whole(Request(Operation.AUDIO_TTS, body, arguments))
        media_type = payloads.SPEECH_FORMATS[body.get("response_format") or "mp3"]
        return Content(audio, media_type, headers=_answered_by(model))

    async def transcriptions(self, inbound: Inbound) -> JSONResult | Content:
        caller = await self._caller(inbound)
        fields = payloads.transcription(await inbound.form(payloads.MAX_AUDIO_BYTES + MULTIPART_OVERHEAD))
        call = await self._route(inbound, caller, fields["model"], Operation.AUDIO_STT)
        arguments = payloads.litellm_arguments(fields, payloads.TRANSCRIPTION_FIELDS)
        arguments.pop("extra_body", None)  # a multipart upload has no JSON body to extend
        model, transcript = await call.whole(Request(Operation.AUDIO_STT, fields, arguments))
        return _answer(transcript, model)

    async def responses(self, inbound: Inbound) -> JSONResult | Content | EventStream:
        """A response, stored (`store`, true by default) before it is answered; with
        `previous_response_id`, the provider is sent the whole conversation (`stored_responses.py`)."""
        caller = await self._caller(inbound)
        body = await inbound.json(payloads.responses)
        stream = bool(body.get("stream"))
        turn = await self.history.turn(caller, body)
        call = await self._route(inbound, caller, body["model"], Operation.RESPONSES, stream=stream)
        sent = turn.body
        request = Request(Operation.RESPONSES, sent, payloads.litellm_arguments(sent, payloads.RESPONSES_FIELDS))
        if not stream:
            model, response = await call.whole(request)
            return _answer(await self.history.keep(turn, response), model)
        model, events = await call.stream(request)
        return EventStream(self.history.kept(turn, events), headers=_answered_by(model), done_marker=False)

    async def get_response(self, inbound: Inbound) -> JSONResult | EventStream:
        """A stored response; with `stream=true`, replayed as the stream events that produce it."""
        caller = await self._caller(inbound)
        stored = await self.history.find(caller, inbound.path_param("response_id"))
        if inbound.query.get("stream", "false").lower() == "false":
            return JSONResult(stored.response)
        return EventStream(replayed(stored.response), done_marker=False)

    async def delete_response(self, inbound: Inbound) -> JSONResult:
        caller = await self._caller(inbound)
        return JSONResult(await self.history.delete(caller, inbound.path_param("response_id")))

    async def response_input_items(self, inbound: Inbound) -> JSONResult:
        caller = await self._caller(inbound)
        stored = await self.history.find(caller, inbound.path_param("response_id"))
        return JSONResult(self.history.input_items(stored, inbound.query))

    async def _route(
        self,
        inbound: Inbound,
        caller: Caller,
        model_id: str,
        operation: Operation,
        *,
        stream: bool = False,
    ) -> Call:
        """The call for the caller's model for `operation`: it and its usable
        fallbacks (those the cached catalog holds), a meter and a deadline. The
        deadline starts once LiteLLM is loaded, if a candidate needs it
        (`providers.mapper.load_litellm_for`)."""
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
        await load_litellm_for(candidates, operation)
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


def _answered_by(model: LLMModel) -> dict[str, str]:
    """The header naming the catalog model that answered (a fallback, perhaps)."""
    return {ANSWERED_BY_HEADER: model.id}


def _answer(body: dict[str, Any] | bytes | str, model: LLMModel) -> JSONResult | Content:
    """A whole answer for the caller: a JSON object, a relayed JSON body (the
    bytes `wire.py` kept of the provider's), or plain text (a transcript)."""
    if isinstance(body, bytes):
        return Content(body, "application/json", headers=_answered_by(model))
    if isinstance(body, str):
        return Content(body.encode(), "text/plain; charset=utf-8", headers=_answered_by(model))
    return JSONResult(body, headers=_answered_by(model))
