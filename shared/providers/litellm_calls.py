"""Attempts made through LiteLLM: one deployment, called with the request's
arguments and the deployment's credentials (`mapper.ProviderCall`).

`LiteLLM` is the transport (see `base.py`) for every operation of every
deployment no other transport serves; audio translations, which LiteLLM has
no call for, are sent with the Azure deployment's own openai client. A result becomes an `Answer` shaped by
`wire.py` and a stream an `Upstream`; a failure becomes a gateway error
(`errors.translate`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from .. import wire
from ..domain import LLMModel, Operation, Provider
from ..wire import Event
from .base import Answer, Attempt, Request, Upstream
from .errors import translate
from .litellm_import import litellm
from .mapper import ProviderCall

T = TypeVar("T")


class Shaper(Protocol):
    """A stream's items as the caller's events (`wire.ChatStream`, `wire.ResponseEvents`)."""

    usage: Any
    model: str | None

    def event(self, result: Any) -> Event | None: ...


async def translated(model: LLMModel, call: ProviderCall, pending: Awaitable[T]) -> T:
    """Await a provider call; its failure becomes a gateway error."""
    try:
        return await pending
    except Exception as exc:
        raise translate(exc, model.id, call.undisclosed) or exc from None


def litellm_route(call: ProviderCall) -> str:
    """The LiteLLM provider route of the call's model (`azure_ai` of `azure_ai/Phi-4`)."""
    return str(call.arguments.get("model", "")).partition("/")[0]


def provider_model(name: Any, route: str) -> str | None:
    """The provider's name for its model in a LiteLLM result, without the `route/`
    LiteLLM puts before some (`azure_ai/DeepSeek-V3-0324`)."""
    if not isinstance(name, str) or not name:
        return None
    return name.removeprefix(f"{route}/") if route else name


async def answered(model: LLMModel, call: ProviderCall, pending: Awaitable[Any]) -> Answer[Any]:
    """A LiteLLM result as an `Answer`, with the token counts and model name it carries."""
    result = await translated(model, call, pending)
    return Answer(
        result, getattr(result, "usage", None), provider_model(getattr(result, "model", None), litellm_route(call))
    )


def whole(function: str, arguments: dict[str, Any]) -> Attempt[Answer[Any]]:
    """An attempt that calls LiteLLM's `function` with one deployment's credentials."""

    async def attempt(model: LLMModel, call: ProviderCall) -> Answer[Any]:
        llm = await litellm()
        return await answered(model, call, getattr(llm, function)(**call.keyword_arguments(arguments)))

    return attempt


def stream(function: str, arguments: dict[str, Any], shaper: Callable[[str], Shaper]) -> Attempt[Upstream]:
    """An attempt that opens a LiteLLM stream; `shaper(model_id)` shapes its items."""

    async def attempt(model: LLMModel, call: ProviderCall) -> Upstream:
        llm = await litellm()
        items = await translated(model, call, getattr(llm, function)(**call.keyword_arguments(arguments)))
        return LiteLLMStream(items, model.id, call.undisclosed, shaper(model.id), litellm_route(call))

    return attempt


class LiteLLMStream:
    """A LiteLLM stream (a `base.Upstream`), its failures as gateway errors."""

    def __init__(self, items: Any, model_id: str, secrets: tuple[str, ...], shaper: Shaper, route: str = "") -> None:
        self.items = items
        self.model_id = model_id
        self.secrets = secrets
        self.shaper = shaper
        #: The LiteLLM route to take off the provider's model name (`litellm_route`).
        self.route = route

    @property
    def usage(self) -> Any:
        return self.shaper.usage

    @property
    def model(self) -> str | None:
        return provider_model(self.shaper.model, self.route)

    async def events(self) -> AsyncGenerator[Event | None, None]:
        items = aiter(self.items)
        while True:
            try:
                item = await anext(items)
            except StopAsyncIteration:
                return
            except Exception as exc:
                raise translate(exc, self.model_id, self.secrets) or exc from None
            yield self.shaper.event(item)

    async def close(self, completed: bool) -> None:
        aclose = getattr(self.items, "aclose", None)
        if aclose is not None:
            await aclose()


#: LiteLLM's function for each operation.
FUNCTIONS = {
    Operation.CHAT_COMPLETION: "acompletion",
    Operation.COMPLETION: "atext_completion",
    Operation.RESPONSES: "aresponses",
    Operation.EMBEDDINGS: "aembedding",
    Operation.IMAGES: "aimage_generation",
    Operation.AUDIO_TTS: "aspeech",
    Operation.AUDIO_STT: "atranscription",
}
#: Transcription formats answered as plain text.
TEXT_FORMATS = ("text", "srt", "vtt")


class LiteLLM:
    """The transport through LiteLLM: every operation, its results in OpenAI's wire format."""

    async def whole(self, model: LLMModel, call: ProviderCall, request: Request) -> Answer[Any]:
        operation, arguments = request.operation, request.arguments
        call = _for_operation(model, call, operation)
        # LiteLLM refuses encoding_format for Vertex: ask for floats, encode them here.
        encode_here = (
            operation is Operation.EMBEDDINGS
            and model.provider is not Provider.AZURE
            and arguments.get("encoding_format") == "base64"
        )
        if encode_here:
            arguments = {key: value for key, value in arguments.items() if key != "encoding_format"}
        if operation is Operation.AUDIO_TRANSLATION:
            return await translation(model, call, request)
        if operation is Operation.AUDIO_STT and call.azure_client is not None:
            # LiteLLM ignores api_version for Azure transcriptions; a client of the gateway's carries it.
            arguments = arguments | {"client": call.azure_client()}
        if operation is Operation.EMBEDDINGS and call.embeddings_client is not None:
            # LiteLLM's embeddings take an openai SDK client, not its HTTP client (`ProviderCall.embeddings_client`).
            arguments = arguments | {"client": call.embeddings_client()}
        answer = await whole(FUNCTIONS[operation], arguments)(model, call)
        result = answer.body
        body: Any
        if operation is Operation.CHAT_COMPLETION:
            body = wire.chat_completion(result, model.id)
        elif operation is Operation.COMPLETION:
            body = wire.text_completion(result, model.id)
        elif operation is Operation.RESPONSES:
            body = wire.response(result, model.id)
        elif operation is Operation.EMBEDDINGS:
            body = wire.embeddings(result, model.id)
            body = wire.base64_embeddings(body) if encode_here else body
        elif operation is Operation.IMAGES:
            body = wire.images(result)
        elif operation is Operation.AUDIO_TTS:
            body = result.content
        elif request.body.get("response_format") in TEXT_FORMATS:
            body = result.text
        else:
            body = wire.transcription(result)
        return replace(answer, body=body)

    async def stream(self, model: LLMModel, call: ProviderCall, request: Request) -> Upstream:
        if request.operation is Operation.RESPONSES:
            return await stream("aresponses", request.arguments, wire.ResponseEvents)(model, call)
        caller_wants_usage = request.caller_wants_usage
        shaper = wire.TextCompletionStream if request.operation is Operation.COMPLETION else wire.ChatStream
        return await stream(
            FUNCTIONS[request.operation], request.arguments, lambda model_id: shaper(model_id, caller_wants_usage)
        )(model, _for_operation(model, call, request.operation))


async def translation(model: LLMModel, call: ProviderCall, request: Request) -> Answer[Any]:
    """An audio translation, sent by the deployment's own `AsyncAzureOpenAI`
    client (`ProviderMapper.azure_client`: the catalog's endpoint, api_version
    and credential): LiteLLM has no translation call. Text formats come back
    as text, the JSON ones shaped as a transcription's."""
    assert call.azure_client is not None, "the catalog lets only Azure models list audio_translation"
    client = call.azure_client()
    pending = client.audio.translations.create(
        model=call.deployment.code, timeout=call.http_timeout(), **request.arguments
    )
    result = await translated(model, call, pending)
    return Answer(result if isinstance(result, str) else wire.transcription(result))


def _for_operation(model: LLMModel, call: ProviderCall, operation: Operation) -> ProviderCall:
    """The deployment's call with LiteLLM's model string for `operation` (a legacy
    completion's may differ: see `domain.LITELLM_COMPLETION_MODEL_FORMAT`)."""
    if operation is not Operation.COMPLETION:
        return call
    return replace(call, arguments=call.arguments | {"model": model.litellm_completion_model_for(call.deployment.code)})
