"""The gateway's use cases: one async method per operation.

Each one reads admit → parse → route → call → shape, each step one call down
into a layer that does not call back up: it admits the caller
(`projects.Authenticator`, which names the project on the request's span),
parses the caller's request into the providers' `Request` (`Inbound.json`
or `Inbound.form` with the operation's reader in `payloads.py`), routes it to the models the
caller may use for the operation (`calls.Calls.route`: the model and its
fallbacks, the meter, the deadline), calls them (a `calls.Call`: each
deployment's transport, chosen when the catalog entry was mapped:
`providers/`), and shapes the result for the caller, as JSON, as the
provider's relayed bytes, or as a stream. No use case knows which provider
answers. Budgets and rate limits are admitted at the end of the route step
(`Calls.route`: reserve before the call, settle from its meter after); the
shaped answer carries the call's x-ratelimit headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import payloads
from .calls import Call, Calls
from .catalog import Catalog
from .domain import LLMModel
from .http import Content, EventStream, JSONResult
from .inbound import Inbound
from .management import Management
from .projects import Authenticator
from .providers.base import Request
from .stored_responses import ResponseHistory, replayed
from .usage import UsageRecorder

ANSWERED_BY_HEADER = "x-gateway-model"

#: Room for the form fields around an audio upload of the maximum size.
MULTIPART_OVERHEAD = 64 * 1024


class Gateway:
    def __init__(
        self,
        catalog: Catalog,
        calls: Calls,
        authenticator: Authenticator,
        management: Management,
        recorder: UsageRecorder,
        environment: str,
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
        *,
        history: ResponseHistory,
    ) -> None:
        self.catalog = catalog
        self.calls = calls
        self.authenticator = authenticator
        self.management = management
        self.recorder = recorder
        self.environment = environment
        self._closers = closers
        self.history = history

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Write the queued usage records (within `grace_seconds`) and release
        the clients the gateway was given (at shutdown)."""
        await self.calls.limiter.close(grace_seconds / 2)
        await self.recorder.close(grace_seconds)
        for close in self._closers:
            await close()

    async def health(self, inbound: Inbound) -> JSONResult:
        return JSONResult({"status": "healthy", "environment": self.environment})

    async def list_models(self, inbound: Inbound) -> JSONResult:
        caller = await self.authenticator.caller(inbound.headers)
        models = [
            _model_object(model)
            for model in await self.catalog.entries()
            if model.is_available_for_project(caller.project)
        ]
        return JSONResult({"object": "list", "data": sorted(models, key=lambda m: m["id"])})

    async def get_model(self, inbound: Inbound) -> JSONResult:
        caller = await self.authenticator.caller(inbound.headers)
        return JSONResult(_model_object(await self.catalog.visible(caller.project, inbound.path_param("model_id"))))

    async def chat_completions(self, inbound: Inbound) -> JSONResult | Content | EventStream:
        return await self._json_call(inbound, payloads.chat_completion)

    async def completions(self, inbound: Inbound) -> JSONResult | Content | EventStream:
        """The legacy `/v1/completions`: a prompt, answered whole or streamed."""
        return await self._json_call(inbound, payloads.completion)

    async def _json_call(
        self, inbound: Inbound, read: Callable[[dict[str, Any]], Request]
    ) -> JSONResult | Content | EventStream:
        """A JSON request (`read` parses which operation's) answered whole, or streamed when it asks
        and its operation can (chat and legacy completions)."""
        caller = await self.authenticator.caller(inbound.headers)
        request = await inbound.json(read)
        call = await self.calls.route(inbound.request_id, caller, request)
        if not request.stream:
            model, completion = await call.whole(request)
            return _answer(completion, model, call)
        model, events = await call.stream(request)
        return EventStream(events, headers=_answered_by(model, call))

    async def embeddings(self, inbound: Inbound) -> JSONResult | Content | EventStream:
        return await self._json_call(inbound, payloads.embedding)

    async def image_generations(self, inbound: Inbound) -> JSONResult | Content | EventStream:
        return await self._json_call(inbound, payloads.image_generation)

    async def speech(self, inbound: Inbound) -> Content:
        caller = await self.authenticator.caller(inbound.headers)
        request = await inbound.json(payloads.speech)
        call = await self.calls.route(inbound.request_id, caller, request)
        model, audio = await call.whole(request)
        media_type = payloads.SPEECH_FORMATS[request.body.get("response_format") or "mp3"]
        return Content(audio, media_type, headers=_answered_by(model, call))

    async def transcriptions(self, inbound: Inbound) -> JSONResult | Content:
        return await self._audio_text(inbound, payloads.transcription)

    async def translations(self, inbound: Inbound) -> JSONResult | Content:
        """`/v1/audio/translations`: an upload as English text, in a transcription's formats."""
        return await self._audio_text(inbound, payloads.translation)

    async def _audio_text(self, inbound: Inbound, read: Callable[[dict[str, Any]], Request]) -> JSONResult | Content:
        """An audio upload's text (`read` parses the form for a transcription or a translation)."""
        caller = await self.authenticator.caller(inbound.headers)
        request = await inbound.form(payloads.MAX_AUDIO_BYTES + MULTIPART_OVERHEAD, read)
        call = await self.calls.route(inbound.request_id, caller, request)
        model, text = await call.whole(request)
        return _answer(text, model, call)

    async def responses(self, inbound: Inbound) -> JSONResult | Content | EventStream:
        """A response, stored (`store`, true by default) before it is answered; with
        `previous_response_id`, the provider is sent the whole conversation (`stored_responses.py`)."""
        caller = await self.authenticator.caller(inbound.headers)
        asked = await inbound.json(payloads.responses)
        turn = await self.history.turn(caller, asked.body)
        request = payloads.responses_sent(asked, turn.body)
        call = await self.calls.route(inbound.request_id, caller, request)
        if not request.stream:
            model, response = await call.whole(request)
            return _answer(await self.history.keep(turn, response), model, call)
        model, events = await call.stream(request)
        return EventStream(self.history.kept(turn, events), headers=_answered_by(model, call), done_marker=False)

    async def get_response(self, inbound: Inbound) -> JSONResult | EventStream:
        """A stored response; with `stream=true`, replayed as the stream events that produce it."""
        caller = await self.authenticator.caller(inbound.headers)
        stored = await self.history.find(caller, inbound.path_param("response_id"))
        if inbound.query.get("stream", "false").lower() == "false":
            return JSONResult(stored.response)
        return EventStream(replayed(stored.response), done_marker=False)

    async def delete_response(self, inbound: Inbound) -> JSONResult:
        caller = await self.authenticator.caller(inbound.headers)
        return JSONResult(await self.history.delete(caller, inbound.path_param("response_id")))

    async def response_input_items(self, inbound: Inbound) -> JSONResult:
        caller = await self.authenticator.caller(inbound.headers)
        stored = await self.history.find(caller, inbound.path_param("response_id"))
        return JSONResult(self.history.input_items(stored, inbound.query))


def _model_object(model: LLMModel) -> dict[str, Any]:
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.provider.value.lower(),
        "name": model.name,
        "operations": [operation.value for operation in model.operations],
    }


def _answered_by(model: LLMModel, call: Call) -> dict[str, str]:
    """The header naming the catalog model that answered (a fallback, perhaps), and the call's x-ratelimit ones."""
    return {ANSWERED_BY_HEADER: model.id} | call.headers()


def _answer(body: dict[str, Any] | bytes | str, model: LLMModel, call: Call) -> JSONResult | Content:
    """A whole answer for the caller: a JSON object, a relayed JSON body (the
    bytes `wire.py` kept of the provider's), or plain text (a transcript)."""
    if isinstance(body, bytes):
        return Content(body, "application/json", headers=_answered_by(model, call))
    if isinstance(body, str):
        return Content(body.encode(), "text/plain; charset=utf-8", headers=_answered_by(model, call))
    return JSONResult(body, headers=_answered_by(model, call))
