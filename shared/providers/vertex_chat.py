"""Chat completions on Vertex AI's Gemini and Claude, and Gemini speech, without `litellm.acompletion`.

LiteLLM's provider classes still do the provider's part: its parameter
mapping, request and response translation, URLs and its stream parsers
(`VertexGeminiConfig` and Gemini's `ModelResponseIterator`; for Claude,
`VertexAIAnthropicConfig` and Anthropic's `ModelResponseIterator`). The
gateway does the rest itself: its Google tokens (`vertex.GoogleTokens`, one
cache with Imagen), its HTTP client (an aiohttp pool with the connect budget
per attempt), the error mapping (`errors.from_status` of this package) and a stream's
shape. What `litellm.acompletion` adds around the provider call is not paid:
its executor thread, logging object and callbacks, cost calculation,
generic parameter checks and its stream wrapper, about two thirds of the CPU
of a call.

Only requests this path translates as LiteLLM would take it (`serves`): text,
inline images and tool-call messages, and the parameters in `FIELDS`.
Anything else (images by URL, audio, files, prompt-caching marks, response
formats, other parameters, and so LiteLLM's own refusals of unsupported ones)
goes through `litellm.acompletion` as before. What LiteLLM's Gemini handler
(`VertexLLM.async_completion`) does around its translation is kept, with its
own functions: a long decode is continued hop by hop to its end, and a
replayed thought signature Gemini refuses is sent again as Google's
placeholder. Its context caching is not needed: a message carrying a
`cache_control` mark goes through `litellm.acompletion`.

Gemini speech (`audio_tts` on a code `domain.gemini_speech` names) is sent
the same way, as the chat LiteLLM's own speech bridge makes of it (the text,
`modalities: [audio]`, the voice): `litellm.aspeech` would send it to Google's
public host whatever `api_base` says, with a token of its own per call.
"""

from __future__ import annotations

import base64
import codecs
import functools
import io
import json
import wave
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import aiohttp

from .. import wire
from ..domain import LLMModel, ModelType, Operation, gemini_speech
from ..errors import GatewayError, InvalidRequest, UpstreamError, UpstreamRejected
from ..wire import ChatStream, Event, Framed, sse_data
from .aiohttp_client import ConnectionPool, failure, post
from .base import Answer, Request, Transport, Upstream
from .errors import from_status, provider_error, scrub
from .litellm_import import litellm
from .mapper import ProviderCall
from .vertex import GoogleTokens

T = TypeVar("T")

#: The request fields this path translates (anything else goes through `litellm.acompletion`).
FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
    }
)
#: The model types served, and how their model ids start.
_FAMILIES = {ModelType.GOOGLE_VERTEX: "gemini-", ModelType.GOOGLE_VERTEX_CLAUDE: "claude"}
#: The message fields this path translates (a `cache_control` mark, say, goes through `litellm.acompletion`).
_MESSAGE_FIELDS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id"})
#: Fields of a request that are not LiteLLM's OpenAI parameters.
_NOT_PARAMETERS = frozenset({"model", "messages", "stream", "stream_options"})
ANTHROPIC_VERSION = "vertex-2023-10-16"
#: What Gemini speech answers (`audio/L16;codec=pcm;rate=24000`): 24 kHz mono, 2 bytes a sample.
GEMINI_SPEECH_RATE = 24_000
GEMINI_SPEECH_SAMPLE_BYTES = 2


def serves(model: LLMModel, body: dict[str, Any]) -> bool:
    """Whether this path answers `body` for `model`: Gemini or Claude on Vertex,
    the fields in `FIELDS`, messages of text, inline images and tool calls."""
    prefix = _FAMILIES.get(model.model_type)
    if prefix is None or not all(deployment.code.startswith(prefix) for deployment in model.deployments):
        return False
    return body.keys() <= FIELDS and all(_plain_message(message) for message in body["messages"])


def _plain_message(message: Any) -> bool:
    """Text, or parts of text and of images sent inline (`data:` URLs), and tool calls:
    nothing to fetch, nothing to cache."""
    if not message.keys() <= _MESSAGE_FIELDS:
        return False
    content = message.get("content")
    if content is None or isinstance(content, str):
        return True
    return isinstance(content, list) and all(_plain_part(part) for part in content)


def _plain_part(part: Any) -> bool:
    if not isinstance(part, dict):
        return False
    if part.get("type") == "text":
        return part.keys() == {"type", "text"} and isinstance(part["text"], str)
    image = part.get("image_url")
    return (
        part.get("type") == "image_url"
        and part.keys() == {"type", "image_url"}
        and isinstance(image, dict)
        and image.keys() <= {"url", "detail"}
        and str(image.get("url", "")).startswith("data:")
    )


class _Logging:
    """What LiteLLM's provider classes read of a logging object (nothing is logged)."""

    def __init__(self) -> None:
        self.optional_params: dict[str, Any] = {}
        self.litellm_params: dict[str, Any] = {}
        self.model_call_details: dict[str, Any] = {}

    def pre_call(self, *args: Any, **kwargs: Any) -> None:
        pass

    def post_call(self, *args: Any, **kwargs: Any) -> None:
        pass


@dataclass(frozen=True)
class _Request:
    """One provider request, translated: where, what, and how to read the answer."""

    url: str
    headers: dict[str, str]
    #: The translated request, as data and as the bytes sent.
    body: Mapping[str, Any]
    payload: bytes
    claude: bool
    code: str
    messages: list[Any]
    optional_params: dict[str, Any]
    #: What no error passed on may carry.
    secrets: tuple[str, ...]


class VertexChat:
    """The transport of Vertex AI deployments' chat completions that `serves` takes
    and Gemini speech (sent through the process's connection pool, `pool`); every
    other request goes to `fallback`."""

    def __init__(self, tokens: GoogleTokens, pool: ConnectionPool, fallback: Transport) -> None:
        self.tokens = tokens
        self.pool = pool
        self.fallback = fallback

    async def whole(self, model: LLMModel, call: ProviderCall, request: Request) -> Answer[Any]:
        if request.operation is Operation.CHAT_COMPLETION and serves(model, request.body):
            answer = await self.completion(model, call, request.body)
            return replace(answer, body=wire.chat_completion(answer.body, model.id))
        if request.operation is Operation.AUDIO_TTS and gemini_speech(call.deployment.code):
            return await self.speech(model, call, request.body, request.arguments["response_format"])
        return await self.fallback.whole(model, call, request)

    async def speech(
        self, model: LLMModel, call: ProviderCall, body: dict[str, Any], response_format: str
    ) -> Answer[bytes]:
        """Gemini speech: the caller's `input` (after its `instructions`, as Google's
        style prompt: `Say cheerfully: ...`) as a chat asking for audio, which
        LiteLLM translates to `generateContent` with `responseModalities: [AUDIO]`
        and the voice (OpenAI's names mapped to Gemini's prebuilt voices, others sent
        as they are) in `speechConfig`. Gemini answers 24 kHz 16-bit mono PCM, sent
        as it is (`pcm`) or in a WAV file (`wav`); its tokens are the usage."""
        text = body["input"]
        if body.get("instructions"):
            text = f"{body['instructions']}: {text}"
        chat = {
            "messages": [{"role": "user", "content": text}],
            "modalities": ["audio"],
            "audio": {"voice": body["voice"], "format": "pcm16"},
        }
        answer = await self.completion(model, call, chat)
        pcm = _speech_audio(answer.body, model.id)
        return replace(answer, body=pcm if response_format == "pcm" else _wav(pcm))

    async def stream(self, model: LLMModel, call: ProviderCall, request: Request) -> Upstream:
        if request.operation is Operation.CHAT_COMPLETION and serves(model, request.body):
            return await self.chat_stream(model, call, request.body, request.caller_wants_usage)
        return await self.fallback.stream(model, call, request)

    async def completion(self, model: LLMModel, call: ProviderCall, body: dict[str, Any]) -> Answer[Any]:
        """A whole chat completion as LiteLLM's `ModelResponse` (shaped by `wire.chat_completion`)."""
        request = await self._request(model, call, body, stream=False)
        request, first = await self._accepted(model.id, call, request, self._read)
        try:
            if request.claude:
                result = _claude_result(request, first)
            else:
                result = await _gemini_result(request, first, functools.partial(self._hop, model.id, call, request))
        except GatewayError:
            raise
        except Exception as exc:
            raise _provider_failure(exc, model.id, request.secrets) from None
        served = getattr(result, "model", None)
        return Answer(result, getattr(result, "usage", None), served if isinstance(served, str) else None)

    async def chat_stream(
        self, model: LLMModel, call: ProviderCall, body: dict[str, Any], caller_wants_usage: bool
    ) -> VertexStream:
        """A chat stream, opened (see `VertexStream` for its chunks)."""
        request = await self._request(model, call, body, stream=True)
        request, response = await self._accepted(model.id, call, request, self._send)
        text = _Text(response, model.id)
        lines = _Lines(text)
        open_hop = functools.partial(self._streamed_hop, model.id, call, request)
        parser = _parser(request, text, lines, open_hop)
        return VertexStream(text, lines, request, parser, ChatStream(model.id, caller_wants_usage))

    async def _accepted(
        self,
        model_id: str,
        call: ProviderCall,
        request: _Request,
        send: Callable[[str, ProviderCall, _Request], Awaitable[T]],
    ) -> tuple[_Request, T]:
        """The request sent and what `send` made of it. Gemini refuses a thought
        signature another backend minted: the request then goes once more with
        Google's placeholder in place of the replayed signatures (LiteLLM's rule)."""
        if request.claude:
            return request, await send(model_id, call, request)
        from litellm.llms.vertex_ai.gemini.rejected_thought_signature_retry import (
            post_with_accepted_thought_signatures_async,
            with_placeholder_thought_signatures,
        )

        async def post(body: Mapping[str, Any]) -> T:
            try:
                return await send(model_id, call, _with_body(request, body))
            except UpstreamRejected as refusal:
                raise _as_litellm_error(refusal) from refusal  # what LiteLLM's rule reads; the refusal if it stands

        try:
            sent, answer = await post_with_accepted_thought_signatures_async(
                request.body,
                with_placeholder_thought_signatures,
                None,
                post,
                lambda body: None,
            )
        except Exception as exc:
            if isinstance(exc.__cause__, GatewayError):
                raise exc.__cause__ from None
            raise
        return _with_body(request, sent), answer

    async def _read(self, model_id: str, call: ProviderCall, request: _Request) -> _Raw:
        """The whole answer to `request`."""
        response = await self._send(model_id, call, request)
        try:
            return _Raw(response.status, response.headers, await response.read())
        except Exception as exc:
            raise failure(exc, model_id) from None
        finally:
            response.release()

    async def _hop(self, model_id: str, call: ProviderCall, request: _Request, body: Mapping[str, Any]) -> _Raw:
        """The next hop of a Gemini long decode (LiteLLM gives its body); a failure
        is a `VertexAIError`, on which LiteLLM keeps the hops it had."""
        try:
            return await self._read(model_id, call, _with_body(request, body))
        except GatewayError as error:
            raise _as_litellm_error(error) from None

    async def _streamed_hop(
        self, model_id: str, call: ProviderCall, request: _Request, body: Mapping[str, Any]
    ) -> _Text:
        """The stream of the next hop of a Gemini long decode (see `_hop`)."""
        try:
            return _Text(await self._send(model_id, call, _with_body(request, body)), model_id)
        except GatewayError as error:
            raise _as_litellm_error(error) from None

    async def _request(self, model: LLMModel, call: ProviderCall, body: dict[str, Any], stream: bool) -> _Request:
        await litellm()  # configured and imported (once per process) before its provider classes are used
        arguments = call.arguments
        account = arguments.get("vertex_credentials")
        token = await self.tokens.token(account, model.id)
        secrets = (*call.undisclosed, token)
        code = call.deployment.code
        # LiteLLM's translation rewrites what it is given; the caller's body may serve a fallback next.
        messages = json.loads(json.dumps(body["messages"]))
        parameters = {key: value for key, value in body.items() if key not in _NOT_PARAMETERS}
        try:
            if model.model_type is ModelType.GOOGLE_VERTEX_CLAUDE:
                return _claude(code, arguments, token, messages, parameters, stream, secrets)
            return _gemini(code, arguments, token, messages, parameters, stream, secrets)
        except GatewayError:
            raise
        except Exception as exc:
            raise _provider_failure(exc, model.id, secrets, before_sending=True) from None

    async def _send(self, model_id: str, call: ProviderCall, request: _Request) -> aiohttp.ClientResponse:
        """POST the request; the response once its status is below 400, else the gateway error for it.
        A new connection gets the connect budget, each wait for bytes the model's `timeout`."""
        read_seconds = float(call.arguments["timeout"])
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=min(call.connect_seconds, read_seconds), sock_read=read_seconds
        )
        refused = functools.partial(_status_error, model_id=model_id, secrets=request.secrets)
        return await post(
            self.pool.session(), request.url, request.payload, request.headers, timeout, model_id, refused
        )


def _gemini(
    code: str,
    arguments: dict[str, Any],
    token: str,
    messages: list[Any],
    parameters: dict[str, Any],
    stream: bool,
    secrets: tuple[str, ...],
) -> _Request:
    from litellm.llms.vertex_ai.gemini.transformation import _with_default_output_budget, transform_request_body
    from litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini import VertexGeminiConfig, VertexLLM

    optional = VertexGeminiConfig().map_openai_params(parameters, {}, code, drop_params=False)
    body = transform_request_body(
        messages=messages,
        model=code,
        optional_params=optional,
        custom_llm_provider="vertex_ai",
        litellm_params={},
        cached_content=None,
    )
    body = _with_default_output_budget(body, code, "vertex_ai", None)
    _, url = VertexLLM()._get_token_and_url(
        model=code,
        auth_header=token,
        gemini_api_key=None,
        vertex_project=arguments.get("vertex_project"),
        vertex_location=arguments.get("vertex_location"),
        vertex_credentials=None,
        stream=stream,
        custom_llm_provider="vertex_ai",
        api_base=arguments.get("api_base"),
    )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return _Request(url, headers, body, _encoded(body), False, code, messages, optional, secrets)


def _claude(
    code: str,
    arguments: dict[str, Any],
    token: str,
    messages: list[Any],
    parameters: dict[str, Any],
    stream: bool,
    secrets: tuple[str, ...],
) -> _Request:
    from litellm.llms.vertex_ai.vertex_ai_partner_models.anthropic.transformation import VertexAIAnthropicConfig
    from litellm.llms.vertex_ai.vertex_llm_base import VertexBase
    from litellm.types.llms.vertex_ai import VertexPartnerProvider

    config = VertexAIAnthropicConfig()
    optional = config.map_openai_params(parameters, {}, code, drop_params=False)
    optional |= {"anthropic_version": ANTHROPIC_VERSION, "is_vertex_request": True}
    project = str(arguments.get("vertex_project") or "")  # the catalog requires `gcp_project`
    url = VertexBase().get_complete_vertex_url(
        custom_api_base=arguments.get("api_base"),
        vertex_location=arguments.get("vertex_location"),
        vertex_project=project,
        project_id=project,
        partner=VertexPartnerProvider.claude,
        stream=stream,
        model=code,
    )
    headers = config.validate_environment(
        headers={"Authorization": f"Bearer {token}"},
        model=code,
        messages=messages,
        optional_params=optional,
        litellm_params={},
        api_key=token,
        api_base=url,
    )
    data = config.transform_request(
        model=code, messages=messages, optional_params=dict(optional), litellm_params={}, headers=headers
    )
    if stream:
        data["stream"] = True
    return _Request(url, headers, data, _encoded(data), True, code, messages, optional, secrets)


def _speech_audio(result: Any, model_id: str) -> bytes:
    """The PCM of Gemini's answer (LiteLLM's `ModelResponse`: the inline audio as the
    message's `audio`). None, when Google's safety filters blocked the text, is a 400
    (`content_filter`, as LiteLLM names the finish); none otherwise, a 502."""
    choices = getattr(result, "choices", None) or []
    audio = getattr(getattr(choices[0], "message", None), "audio", None) if choices else None
    data = getattr(audio, "data", None)
    if not data and choices and getattr(choices[0], "finish_reason", None) == "content_filter":
        raise UpstreamRejected(
            400, f"Model '{model_id}' made no audio: Google's safety filters blocked the input.", code="content_filter"
        )
    if not data:
        raise UpstreamError(f"Model '{model_id}' answered without audio.")
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:
        raise UpstreamError(f"Model '{model_id}' answered with audio the gateway cannot read.") from None


def _wav(pcm: bytes) -> bytes:
    """Gemini speech's PCM in a WAV file."""
    file = io.BytesIO()
    with wave.open(file, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(GEMINI_SPEECH_SAMPLE_BYTES)
        out.setframerate(GEMINI_SPEECH_RATE)
        out.writeframes(pcm)
    return file.getvalue()


def _encoded(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode(errors="backslashreplace")


class _Raw:
    """What LiteLLM's response translation reads of an `httpx.Response`
    (building one costs more than the rest of reading the answer)."""

    def __init__(self, status: int, headers: Any, content: bytes) -> None:
        self.status_code = status
        self.headers = headers  # aiohttp's, case-insensitive like httpx's
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class _Text:
    """What LiteLLM's stream parsers read of an `httpx.Response`: its text as it
    arrives (a failure to read it is the gateway's error), and `aclose`."""

    def __init__(self, response: aiohttp.ClientResponse, model_id: str) -> None:
        self.response = response
        self.model_id = model_id
        self.headers = response.headers

    async def aiter_text(self) -> AsyncGenerator[str, None]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces = self.response.content.iter_any()
        while True:
            try:
                piece = await anext(pieces)
            except StopAsyncIteration:
                break
            except Exception as exc:
                raise failure(exc, self.model_id) from None
            yield decoder.decode(piece)
        yield decoder.decode(b"", final=True)

    async def aclose(self) -> None:
        """The connection goes back to the pool when the answer was read to its end, else it is dropped."""
        self.response.release()


class _Lines:
    """The `data:` lines of a stream's first response, as LiteLLM's stream parsers
    read them (split by LiteLLM's own splitter), and whether the next one is
    already here (`ready`): what arrived in one read goes to the caller as one
    frame. The parsers make nothing of the other lines (blank lines, `event:`
    names, comments), so they are not handed over. (A long decode's next hops
    are read by LiteLLM from `_Text.aiter_text`.)"""

    def __init__(self, text: _Text) -> None:
        from litellm.llms.custom_httpx.sse_lines import _SSELineSplitter

        self.content = text.response.content
        self.model_id = text.model_id
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._splitter = _SSELineSplitter()
        self._lines: deque[str] = deque()
        self._ended = False

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        while not self._lines:
            if self._ended:
                raise StopAsyncIteration
            try:
                piece = await self.content.readany()
            except Exception as exc:
                raise failure(exc, self.model_id) from None
            if piece:
                self._take(piece)
            else:
                self._ended = True
                self._keep(self._splitter.feed(self._decoder.decode(b"", final=True)))
                self._keep(self._splitter.flush())
        return self._lines.popleft()

    def ready(self) -> bool:
        """Whether a whole `data:` line is here without waiting for the provider (a
        failure to read is not: the next read reports it)."""
        if not self._lines and not self._ended:
            try:
                self._take(self.content.read_nowait())
            except Exception:
                return False
        return bool(self._lines)

    def _take(self, piece: bytes) -> None:
        self._keep(self._splitter.feed(self._decoder.decode(piece)))

    def _keep(self, lines: tuple[str, ...]) -> None:
        self._lines.extend(line for line in lines if line.startswith("data:"))


def _with_body(request: _Request, body: Mapping[str, Any]) -> _Request:
    """`request` with another body of LiteLLM's (the resent one, a long decode's next hop), to the URL that takes it."""
    from litellm.llms.vertex_ai.gemini.long_decode import url_for

    return replace(request, url=url_for(request.url, body), body=body, payload=_encoded(body))  # type: ignore[arg-type]


def _as_litellm_error(error: GatewayError) -> Exception:
    """A gateway error as LiteLLM's `VertexAIError`: what its rules for hops and resends read."""
    from litellm.llms.vertex_ai.common_utils import VertexAIError

    return VertexAIError(status_code=error.status, message=error.message, headers=None)


def _claude_result(request: _Request, raw: _Raw) -> Any:
    """Claude's whole answer as LiteLLM's `ModelResponse`."""
    from litellm.llms.vertex_ai.vertex_ai_partner_models.anthropic.transformation import VertexAIAnthropicConfig
    from litellm.types.utils import ModelResponse

    return VertexAIAnthropicConfig().transform_response(
        model=request.code,
        raw_response=raw,  # type: ignore[arg-type]
        model_response=ModelResponse(),
        logging_obj=_Logging(),  # type: ignore[arg-type]
        request_data={},
        messages=request.messages,
        optional_params=request.optional_params,
        litellm_params={},
        encoding=None,
        json_mode=False,
    )


async def _gemini_result(request: _Request, first: _Raw, hop: Callable[[Mapping[str, Any]], Awaitable[_Raw]]) -> Any:
    """Gemini's whole answer as LiteLLM's `ModelResponse`: LiteLLM asks for the
    next hops of a long decode (an answer cut off to be continued) and merges them."""
    from litellm.llms.vertex_ai.gemini.long_decode import collect_hops_async
    from litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini import _transform_long_decode_hops
    from litellm.types.utils import ModelResponse

    hops = await collect_hops_async(first.json(), request.body, hop)  # type: ignore[arg-type]
    return _transform_long_decode_hops(
        model=request.code,
        hops=hops,
        first_response=first,  # type: ignore[arg-type]
        model_response=ModelResponse(),
        logging_obj=_Logging(),  # type: ignore[arg-type]
        request_body=request.body,  # type: ignore[arg-type]
        messages=request.messages,
    )


def _parser(
    request: _Request, text: _Text, lines: _Lines, open_hop: Callable[[Mapping[str, Any]], Awaitable[_Text]]
) -> Any:
    """LiteLLM's stream parser for the provider, over `lines` (of `text`): SSE lines to
    `ModelResponseStream`s (Gemini's opens the next hops of a long decode with `open_hop`)."""
    if request.claude:
        from litellm.llms.anthropic.chat.handler import ModelResponseIterator as AnthropicChunks

        return AnthropicChunks(streaming_response=lines, sync_stream=False, json_mode=False)
    from litellm.llms.vertex_ai.gemini.long_decode import AsyncStreamResume
    from litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini import ModelResponseIterator

    return ModelResponseIterator(
        streaming_response=lines,
        sync_stream=False,
        logging_obj=_Logging(),  # type: ignore[arg-type]
        response=text,  # type: ignore[arg-type]
        resume=AsyncStreamResume(request_body=request.body, open_hop=open_hop),  # type: ignore[arg-type]
    )


class VertexStream:
    """A Gemini or Claude stream (a `calls.Upstream`), as OpenAI's chunks.

    As LiteLLM's stream wrapper does: the first chunk with something in it
    carries `role: assistant`, the finish reason comes in a chunk of its own
    at the end, and the usage (the provider's latest count) in a choiceless
    chunk after it, which `wire.ChatStream` passes on only to a caller who
    asked for it. The chunks of what arrived in one read from the provider
    go to the caller as one frame (as the Azure relay's do); those before a
    failure are sent before it.
    """

    def __init__(self, text: _Text, lines: _Lines, request: _Request, parser: Any, chunks: ChatStream) -> None:
        self.text = text
        self.lines = lines
        self.request = request
        self.parser = parser
        self.chunks = chunks
        self._role_sent = False
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self._last: dict[str, Any] = {}

    @property
    def usage(self) -> Any:
        return self.chunks.usage

    @property
    def model(self) -> str | None:
        return self.chunks.model

    async def events(self) -> AsyncGenerator[Event | None, None]:
        parsed = aiter(self.parser)
        frame: list[bytes] = []
        while True:
            try:
                chunk = self._chunk(await anext(parsed))
            except StopAsyncIteration:
                break
            except Exception as exc:
                error = exc if isinstance(exc, GatewayError) else None
                error = error or _provider_failure(exc, self.chunks.model_id, self.request.secrets)
                if frame:
                    yield None, Framed(b"".join(frame))
                raise error from None
            if chunk is not None and (event := self.chunks.event(chunk)) is not None:
                frame.append(sse_data(event[1]))
            if not self.lines.ready():
                yield (None, Framed(b"".join(frame))) if frame else None
                frame = []
        for ending in self._endings():
            if (event := self.chunks.event(ending)) is not None:
                frame.append(sse_data(event[1]))
        if frame:
            yield None, Framed(b"".join(frame))

    def _endings(self) -> list[dict[str, Any]]:
        """The finish reason's chunk, and the usage's when the provider counted."""
        endings = [self._ending(self._finish or "stop")]
        if self._usage:
            endings.append(self._ending(None) | {"choices": [], "usage": self._usage})
        return endings

    def _chunk(self, parsed: Any) -> dict[str, Any] | None:
        """One of LiteLLM's chunks as the caller's, or None when it carries nothing to send."""
        if parsed is None:
            return None
        chunk = parsed.model_dump(mode="json", warnings=False)
        usage = chunk.pop("usage", None)
        if usage:
            self._usage = usage
        kept = []
        for choice in chunk.get("choices") or []:
            self._finish = choice.pop("finish_reason", None) or self._finish
            delta = choice.get("delta") or {}
            if not any(value not in (None, "", [], {}) for key, value in delta.items() if key != "role"):
                continue
            if self._role_sent:
                delta.pop("role", None)
            else:
                delta["role"] = "assistant"
                self._role_sent = True
            choice["delta"] = delta
            kept.append(choice)
        self._last = {key: chunk[key] for key in ("id", "created", "model", "object") if chunk.get(key)}
        return chunk | {"choices": kept} if kept else None

    def _ending(self, finish: str | None) -> dict[str, Any]:
        choices = [{"index": 0, "delta": {}, "finish_reason": finish}] if finish else []
        return {"object": "chat.completion.chunk"} | self._last | {"choices": choices}

    async def close(self, completed: bool) -> None:
        """The connection goes back to the pool when the stream was read to its end, else it is dropped.
        (A long decode's earlier hops were released when the next one opened.)"""
        response = getattr(self.parser, "response", None) or self.text
        if completed:
            response.response.release()
        else:
            response.response.close()


def _status_error(status: int, raw: bytes, headers: Any, model_id: str, secrets: tuple[str, ...]) -> GatewayError:
    """Google's `{"error": {"code", "message", "status"}}` as the gateway's error
    (see `errors.from_status` of this package), the secrets and the upstream's address removed."""
    try:
        error = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        error = None
    found = provider_error(error, secrets)
    message = found.message or f"The provider answered with status {status}."
    lowered = {str(key).lower(): str(value) for key, value in headers.items()}
    return from_status(status, message, lowered, model_id, found)


def _provider_failure(
    exc: Exception, model_id: str, secrets: tuple[str, ...], before_sending: bool = False
) -> GatewayError:
    """A failure of LiteLLM's translation, or an error the provider sent within
    a 200 answer (a stream's error event), with the status LiteLLM gave it (its
    refusal of a parameter is a 400). Without one, a request that could not be
    translated is the caller's 400, an answer that could not be read a 502."""
    status = getattr(exc, "status_code", None)
    message = scrub(str(getattr(exc, "message", None) or exc), secrets)
    if isinstance(status, int) and status >= 400:
        return from_status(status, message, {}, model_id)
    if before_sending:
        first_line = (message.strip().splitlines() or [type(exc).__name__])[0]
        return InvalidRequest(f"The request could not be prepared for model '{model_id}': {first_line[:500]}")
    return UpstreamError(f"Model '{model_id}' answered with something the gateway cannot read.")
