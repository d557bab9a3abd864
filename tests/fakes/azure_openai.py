"""A fake Azure OpenAI resource speaking the real data-plane wire format.

Every operation is served on both Azure surfaces:

* deployments: `/openai/deployments/{deployment}/<operation>?api-version=...` (for
  the Responses API `/openai/responses?api-version=...`, deployment in the body's
  `model`); `api-version` is required, and `/openai/responses` is served only on
  previews since 2025-03-01-preview (else 404, as Azure answers);
* v1: `/openai/v1/<operation>`, deployment in the body's (or form's) `model`;
  `api-version` is optional, and if given must be `preview`, `latest` or `v1`.

Operations: `chat/completions` (JSON and SSE), the legacy `completions` (JSON and
SSE, `prompt` a string or a list of them), `embeddings`, `images/generations`,
`audio/speech`, `audio/transcriptions` and `audio/translations` (multipart), and
`responses` (JSON and SSE).

A request is authorised by an `api-key` header equal to the deployment's key, or
by `Authorization: Bearer <token>` with an accepted token (on the v1 surface the
deployment's key is accepted as a bearer token too, as Azure does).

Answers derive from the request so tests can prove what was sent: the reply is
`"echo: "` plus the last user text, and token counts are whitespace-separated words.

Deployments named after a fault produce it on every operation, whatever the key:
`rate-limited` (429, `Retry-After: 7`), `broken` (500), `slow` (answers after
5 s), `filtered` (400 content filter), `midstream-error` (an SSE stream whose
connection is closed mid-body after two text chunks, so the client sees an
incomplete chunked body and uvicorn logs "ASGI callable returned without
completing response."; other requests answer normally), `midstream-error-event`
(a chat SSE stream that sends the prompt filter, role and two text chunks, then
an `{"error": {...}}` event as OpenAI and Azure send when the model fails after
the stream started, and ends the body normally; other requests answer normally;
see `FakeAzureOpenAI.hold_error_event`), `slow-stream` (a 40-word reply,
streamed 0.1 s per event) and `empty-stream` (a stream that ends, normally,
before its first event; other requests answer normally).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import random
import struct
import threading
import time
import uuid
import wave
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .server import RecordedRequest, record

UPSTREAM_MODEL = "gpt-4o-2024-08-06"
EMBEDDING_MODEL = "text-embedding-3-small"
RETRY_AFTER_SECONDS = 7
SLOW_SECONDS = 5
SLOW_STREAM_PAUSE = 0.1
#: How long a held `midstream-error-event` stream waits for its release at most.
HELD_ERROR_SECONDS = 30
#: api-versions the v1 paths accept, and the first that serves `/openai/responses`.
V1_API_VERSIONS = frozenset({"preview", "latest", "v1"})
RESPONSES_SINCE = "2025-03-01-preview"
FAULTS = frozenset(
    {
        "rate-limited",
        "broken",
        "slow",
        "filtered",
        "midstream-error",
        "midstream-error-event",
        "slow-stream",
        "empty-stream",
    }
)
SPEECH_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
_SAFE = {"filtered": False, "severity": "safe"}
CONTENT_FILTER_RESULTS = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
PROMPT_FILTER_RESULTS = [
    {
        "prompt_index": 0,
        "content_filter_results": CONTENT_FILTER_RESULTS | {"jailbreak": {"filtered": False, "detected": False}},
    }
]


@dataclass
class EventStream:
    """A handler's SSE answer; on `midstream-error` only the first `kept_on_error` events are sent, on
    `midstream-error-event` they are followed by `error_event` (when the operation has one)."""

    events: list[bytes]
    kept_on_error: int
    error_event: bytes | None = None


Handler = Callable[[RecordedRequest], Response | EventStream]


# Wire helpers


def azure_error(
    http_status: int, code: str, message: str, headers: dict[str, str] | None = None, **fields: Any
) -> Response:
    """An error in Azure OpenAI's `{"error": {"code", "message", ...}}` shape."""
    body = {"error": {"code": code, "message": message, **fields}}
    return JSONResponse(body, status_code=http_status, headers=headers)


def _rate_limited(operation: str, api_version: str) -> Response:
    message = (
        f"Requests to the {operation} Operation under Azure OpenAI API version {api_version} have exceeded "
        f"token rate limit of your current OpenAI S0 pricing tier. Please retry after {RETRY_AFTER_SECONDS} seconds. "
        "Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."
    )
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS), "retry-after-ms": str(RETRY_AFTER_SECONDS * 1000)}
    return azure_error(429, "429", message, headers)


def _content_filtered() -> Response:
    message = (
        "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
        "Please modify your prompt and retry. To learn more about our content filtering policies please read "
        "our documentation: https://go.microsoft.com/fwlink/?linkid=2198766"
    )
    result = CONTENT_FILTER_RESULTS | {"hate": {"filtered": True, "severity": "high"}}
    innererror = {"code": "ResponsibleAIPolicyViolation", "content_filter_result": result}
    # The shape of Microsoft's content filtering documentation (a `type` of null included).
    return azure_error(400, "content_filter", message, type=None, param="prompt", status=400, innererror=innererror)


def _unserved_api_version(recorded: RecordedRequest) -> Response | None:
    """Azure's answer to an api-version the path is not served on: the v1 paths take only
    `preview`/`latest`/`v1`, and `/openai/responses` only previews since RESPONSES_SINCE."""
    version = recorded.query.get("api-version")
    if recorded.path.startswith("/openai/v1/") and version is not None and version not in V1_API_VERSIONS:
        return azure_error(400, "BadRequest", "API version not supported")
    preview = version == "preview" or ((version or "").endswith("-preview") and (version or "") >= RESPONSES_SINCE)
    if recorded.path == "/openai/responses" and not preview:
        return azure_error(404, "404", "Resource not found")
    return None


def _sse(data: Any, event: str | None = None) -> bytes:
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {json.dumps(data)}\n\n".encode()


async def _iterate(items: Iterable[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


class _DroppedStream(StreamingResponse):
    """Sends its chunks, then returns without ending the chunked body: the server closes the connection."""

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


class _AzureHeaders:
    """Adds the headers Azure OpenAI puts on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_azure_headers()]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _azure_headers() -> list[tuple[bytes, bytes]]:
    headers = {
        "apim-request-id": str(uuid.uuid4()),
        "x-ms-region": "Sweden Central",
        "x-ratelimit-remaining-requests": "99",
        "x-ratelimit-remaining-tokens": "99000",
    }
    return [(name.encode(), value.encode()) for name, value in headers.items()]


# Content helpers


def words(text: str) -> int:
    return len(text.split())


def _text_of(content: Any) -> str:
    """The text of a message's content: its text parts joined, `[image]` for each image part."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.get("type") in ("text", "input_text", "output_text"):
            texts.append(part["text"])
        elif part.get("type") in ("image_url", "input_image"):
            texts.append("[image]")
    return " ".join(texts)


def _pieces(text: str) -> list[str]:
    """`text` split word by word, spaces kept, so the pieces join back to it."""
    split = text.split(" ")
    return [word + " " for word in split[:-1]] + split[-1:]


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def speech_bytes(audio_format: str, text: str) -> bytes:
    """What the fake 'speaks': deterministic bytes naming the format and the input."""
    return f"FAKEAUDIO:{audio_format}:{text}".encode()


# Chat completions


def _logprobs(pieces: list[str], top: int) -> dict[str, Any]:
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    content = [entry(p, -0.1) | {"top_logprobs": [entry(p, -0.1 * (k + 1)) for k in range(top)]} for p in pieces]
    return {"content": content, "refusal": None}


def _tool_call(tool: dict[str, Any], user_text: str) -> dict[str, Any]:
    function = {"name": tool["function"]["name"], "arguments": json.dumps({"echo": user_text})}
    return {"id": "call_fake_1", "type": "function", "function": function}


#: What OpenAI and Azure OpenAI send, as a stream's last event, when the model fails after the stream started.
MIDSTREAM_ERROR = _sse(
    {
        "error": {
            "code": "server_error",
            "message": "The server had an error while processing your request. Sorry about that!",
            "param": None,
            "type": "server_error",
        }
    }
)


def chat(recorded: RecordedRequest) -> Response | EventStream:
    body = recorded.json
    messages = body["messages"]
    user_text = _text_of(next((m for m in reversed(messages) if m.get("role") == "user"), {}).get("content"))
    tool = body["tools"][0] if body.get("tools") else None
    call = _tool_call(tool, user_text) if tool else None
    text = "echo: " + user_text
    if recorded.extra["deployment"] == "slow-stream":
        text = " ".join(f"w{index}" for index in range(40))
    prompt_tokens = sum(words(_text_of(m.get("content"))) for m in messages)
    completion_tokens = words(call["function"]["arguments"] if call else text)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
        "completion_tokens_details": {
            "accepted_prediction_tokens": 0,
            "audio_tokens": 0,
            "reasoning_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    reply = ChatReply(body, text, call, usage)
    if body.get("stream"):
        # On a fault: the prompt filter, the role and two text chunks.
        return EventStream(reply.events(), kept_on_error=4, error_event=MIDSTREAM_ERROR)
    return JSONResponse(reply.completion())


class ChatReply:
    """One chat completion answer, as a JSON body or as SSE chunks."""

    def __init__(self, body: dict[str, Any], text: str, call: dict[str, Any] | None, usage: dict[str, int]) -> None:
        self.body = body
        self.text = text
        self.call = call
        self.usage = usage
        self.id = _new_id("chatcmpl-")
        self.created = int(time.time())
        self.choices = range(body.get("n") or 1)
        self.finish_reason = "tool_calls" if call else "stop"

    def _logprobs(self, pieces: list[str]) -> dict[str, Any] | None:
        return _logprobs(pieces, self.body.get("top_logprobs") or 0) if self.body.get("logprobs") else None

    def _envelope(self, kind: str, choices: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": UPSTREAM_MODEL,
            "system_fingerprint": "fp_fake",
            "choices": choices,
            **fields,
        }

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if self.call else self.text,
            "refusal": None,
            "annotations": [],
        }
        if self.call:
            message["tool_calls"] = [self.call]
        logprobs = None if self.call else self._logprobs(_pieces(self.text))
        choices = [
            {
                "index": index,
                "message": message,
                "finish_reason": self.finish_reason,
                "logprobs": logprobs,
                "content_filter_results": CONTENT_FILTER_RESULTS,
            }
            for index in self.choices
        ]
        return self._envelope("chat.completion", choices, usage=self.usage, prompt_filter_results=PROMPT_FILTER_RESULTS)

    def _chunk(
        self, index: int, delta: dict[str, Any], finish_reason: str | None = None, logprobs: Any = None
    ) -> bytes:
        choice = {
            "index": index,
            "delta": delta,
            "finish_reason": finish_reason,
            "logprobs": logprobs,
            "content_filter_results": {} if finish_reason else CONTENT_FILTER_RESULTS,
        }
        return _sse(self._envelope("chat.completion.chunk", [choice], **self._null_usage()))

    def _null_usage(self) -> dict[str, Any]:
        """`usage: null` on every chunk but the last when the caller asked for usage, as Azure sends."""
        return {"usage": None} if (self.body.get("stream_options") or {}).get("include_usage") else {}

    def _choice_chunks(self, index: int) -> list[bytes]:
        chunks = [self._chunk(index, {"role": "assistant", "content": "", "refusal": None})]
        if self.call:
            name, arguments = self.call["function"]["name"], self.call["function"]["arguments"]
            function = {"name": name, "arguments": ""}
            opening = {"index": 0, "id": self.call["id"], "type": "function", "function": function}
            chunks.append(self._chunk(index, {"tool_calls": [opening]}))
            chunks.append(self._chunk(index, {"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}))
        else:
            chunks += [self._chunk(index, {"content": p}, logprobs=self._logprobs([p])) for p in _pieces(self.text)]
        return [*chunks, self._chunk(index, {}, self.finish_reason)]

    def events(self) -> list[bytes]:
        """Azure's order: a prompt-filter chunk without choices, each choice's chunks, usage if asked, [DONE]."""
        events = [
            _sse(
                {
                    "id": "",
                    "object": "",
                    "created": 0,
                    "model": "",
                    "choices": [],
                    "prompt_filter_results": PROMPT_FILTER_RESULTS,
                }
            )
        ]
        for index in self.choices:
            events += self._choice_chunks(index)
        if (self.body.get("stream_options") or {}).get("include_usage"):
            events.append(_sse(self._envelope("chat.completion.chunk", [], usage=self.usage)))
        return [*events, b"data: [DONE]\n\n"]


# Legacy completions


def _prompts(given: Any) -> list[str]:
    """A legacy `prompt` as texts: a string, strings, or token ids (each id a word)."""
    if isinstance(given, str):
        return [given]
    if given and isinstance(given[0], int):
        given = [given]
    return [item if isinstance(item, str) else " ".join(map(str, item)) for item in given]


def completions(recorded: RecordedRequest) -> Response | EventStream:
    """`text_completion` answers: per prompt (times `n`) a choice echoing it, Azure's filter results beside."""
    body = recorded.json
    prompts = _prompts(body["prompt"])
    texts = ["echo: " + prompt for prompt in prompts for _ in range(body.get("n") or 1)]
    prompt_tokens = sum(map(words, prompts))
    completion_tokens = sum(map(words, texts))
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    envelope = {"id": _new_id("cmpl-"), "object": "text_completion", "created": int(time.time())}
    envelope |= {"model": UPSTREAM_MODEL}

    def choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
        filters = CONTENT_FILTER_RESULTS if finish_reason is None else {}
        return {"text": text, "index": index, "finish_reason": finish_reason, "logprobs": None} | {
            "content_filter_results": filters
        }

    if not body.get("stream"):
        choices = [
            choice(index, text, "stop") | {"content_filter_results": CONTENT_FILTER_RESULTS}
            for index, text in enumerate(texts)
        ]
        return JSONResponse(
            envelope | {"choices": choices, "usage": usage, "prompt_filter_results": PROMPT_FILTER_RESULTS}
        )
    events = [_sse(envelope | {"choices": [], "prompt_filter_results": PROMPT_FILTER_RESULTS})]
    for index, text in enumerate(texts):
        events += [_sse(envelope | {"choices": [choice(index, piece, None)]}) for piece in _pieces(text)]
        events.append(_sse(envelope | {"choices": [choice(index, "", "stop")]}))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append(_sse(envelope | {"choices": [], "usage": usage}))
    return EventStream([*events, b"data: [DONE]\n\n"], kept_on_error=3)


# Embeddings, images, speech


def _vector(item: Any, dimensions: int) -> list[float]:
    """A deterministic vector in [-1, 1] derived from the input's hash."""
    digest = hashlib.shake_256(json.dumps(item).encode()).digest(dimensions)
    return [round(byte / 127.5 - 1, 6) for byte in digest]


def embeddings(recorded: RecordedRequest) -> Response:
    body = recorded.json
    given = body["input"]
    inputs = [given] if isinstance(given, str) or (given and isinstance(given[0], int)) else given
    dimensions = body.get("dimensions") or 8
    data = []
    for index, item in enumerate(inputs):
        vector: Any = _vector(item, dimensions)
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(len(item) if isinstance(item, list) else words(item) for item in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return JSONResponse({"object": "list", "data": data, "model": EMBEDDING_MODEL, "usage": usage})


#: The `quality` values of gpt-image models (DALL-E 3 takes `standard` and `hd`).
GPT_IMAGE_QUALITIES = frozenset({"low", "medium", "high", "auto"})


def images(recorded: RecordedRequest) -> Response:
    body = recorded.json
    filters = {"content_filter_results": CONTENT_FILTER_RESULTS, "prompt_filter_results": CONTENT_FILTER_RESULTS}
    data = []
    for index in range(body.get("n") or 1):
        if body.get("response_format") == "b64_json":
            image = {"b64_json": base64.b64encode(TINY_PNG).decode()}
        else:
            image = {"url": f"https://fakeoai.blob.core.windows.net/private/images/{index}.png"}
        data.append(image | {"revised_prompt": body["prompt"]} | filters)
    answer: dict[str, Any] = {"created": int(time.time()), "data": data}
    if body.get("quality") in GPT_IMAGE_QUALITIES:  # gpt-image models count tokens; DALL-E models do not
        prompt_tokens = words(body["prompt"])
        image_tokens = 272 * len(data)
        answer["usage"] = {
            "input_tokens": prompt_tokens,
            "output_tokens": image_tokens,
            "total_tokens": prompt_tokens + image_tokens,
            "input_tokens_details": {"text_tokens": prompt_tokens, "image_tokens": 0},
        }
    return JSONResponse(answer)


def speech(recorded: RecordedRequest) -> Response:
    audio_format = recorded.json.get("response_format") or "mp3"
    audio = speech_bytes(audio_format, recorded.json["input"])
    chunks = [audio[start : start + 8] for start in range(0, len(audio), 8)]
    return StreamingResponse(_iterate(chunks), media_type=SPEECH_TYPES[audio_format])


# Transcriptions and translations


def _duration(audio: bytes) -> float:
    """The clip's length in seconds when it is a WAV file, else 1 s."""
    try:
        with wave.open(io.BytesIO(audio)) as clip:
            return round(clip.getnframes() / clip.getframerate(), 3)
    except (wave.Error, EOFError):
        return 1.0


def _cue(text: str, duration: float, separator: str) -> str:
    end = f"00:00:{int(duration):02d}{separator}{round(duration % 1 * 1000):03d}"
    return f"00:00:00{separator}000 --> {end}\n{text}\n\n"


def _verbose(task: str, text: str, duration: float, language: str, granularities: list[str]) -> dict[str, Any]:
    segment = {
        "id": 0,
        "seek": 0,
        "start": 0.0,
        "end": duration,
        "text": text,
        "tokens": [1, 2],
        "temperature": 0.0,
        "avg_logprob": -0.2,
        "compression_ratio": 1.0,
        "no_speech_prob": 0.0,
    }
    verbose: dict[str, Any] = {
        "task": task,
        "language": language,
        "duration": duration,
        "text": text,
        "segments": [segment],
    }
    if "word" in granularities:
        step = duration / words(text)
        verbose["words"] = [{"word": w, "start": i * step, "end": (i + 1) * step} for i, w in enumerate(text.split())]
    return verbose


def _audio_text(task: str) -> Handler:
    """The handler for transcriptions (`task="transcribe"`) or translations (`"translate"`)."""

    def handler(recorded: RecordedRequest) -> Response:
        form = recorded.extra["form"]
        audio = form["file"][1]
        text = f"transcribed {len(audio)} bytes"
        duration = _duration(audio)
        response_format = form.get("response_format") or "json"
        if response_format == "text":
            return Response(text + "\n", media_type="text/plain")
        if response_format == "srt":
            return Response("1\n" + _cue(text, duration, ","), media_type="text/plain")
        if response_format == "vtt":
            return Response("WEBVTT\n\n" + _cue(text, duration, "."), media_type="text/plain")
        if response_format == "verbose_json":
            language = "english" if task == "translate" else form.get("language") or "english"
            granularities = recorded.extra["form_lists"].get("timestamp_granularities[]", [])
            return JSONResponse(_verbose(task, text, duration, language, granularities))
        return JSONResponse({"text": text})

    return handler


# Responses API


def _input_texts(given: Any) -> list[str]:
    """The user texts of a Responses `input`: a string, or a list of message items."""
    if isinstance(given, str):
        return [given]
    return [_text_of(item.get("content")) for item in given if item.get("role", "user") == "user"]


class ResponsesReply:
    """One Responses API answer with a single text message, as a JSON body or as SSE events."""

    def __init__(self, body: dict[str, Any]) -> None:
        texts = _input_texts(body["input"])
        self.body = body
        self.text = "echo: " + (texts[-1] if texts else "")
        self.id = _new_id("resp_")
        self.message_id = _new_id("msg_")
        self.created_at = int(time.time())
        input_tokens = sum(map(words, texts)) + words(body.get("instructions") or "")
        self.usage = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": words(self.text),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + words(self.text),
        }
        self.sequence = 0

    def _message(self, done: bool) -> dict[str, Any]:
        content = [{"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}] if done else []
        status = "completed" if done else "in_progress"
        return {"id": self.message_id, "type": "message", "role": "assistant", "status": status, "content": content}

    def response(self, done: bool = True) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": "completed" if done else "in_progress",
            "model": UPSTREAM_MODEL,
            "output": [self._message(done)] if done else [],
            "usage": self.usage if done else None,
            "instructions": self.body.get("instructions"),
            "metadata": self.body.get("metadata") or {},
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "temperature": 1.0,
            "top_p": 1.0,
            "text": {"format": {"type": "text"}},
            "error": None,
            "incomplete_details": None,
            "content_filters": None,
        }

    def _event(self, kind: str, **fields: Any) -> bytes:
        self.sequence += 1
        return _sse({"type": kind, "sequence_number": self.sequence, **fields}, event=kind)

    def events(self) -> list[bytes]:
        """The event sequence the OpenAI SDK expects for one streamed text message."""
        at = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            self._event("response.created", response=self.response(done=False)),
            self._event("response.in_progress", response=self.response(done=False)),
            self._event("response.output_item.added", output_index=0, item=self._message(done=False)),
            self._event("response.content_part.added", **at, part=part),
            *(self._event("response.output_text.delta", **at, delta=p, logprobs=[]) for p in _pieces(self.text)),
            self._event("response.output_text.done", **at, text=self.text, logprobs=[]),
            self._event("response.content_part.done", **at, part=part | {"text": self.text}),
            self._event("response.output_item.done", output_index=0, item=self._message(done=True)),
            self._event("response.completed", response=self.response()),
        ]


def responses(recorded: RecordedRequest) -> Response | EventStream:
    reply = ResponsesReply(recorded.json)
    if recorded.json.get("stream"):
        return EventStream(reply.events(), kept_on_error=6)  # up to the second text delta
    return JSONResponse(reply.response())


# The resource


#: operation path -> (Azure's operation name, the field a request must carry, handler)
OPERATIONS: dict[str, tuple[str, str, Handler]] = {
    "chat/completions": ("ChatCompletions_Create", "messages", chat),
    "completions": ("Completions_Create", "prompt", completions),
    "embeddings": ("Embeddings_Create", "input", embeddings),
    "images/generations": ("ImageGenerations_Create", "prompt", images),
    "audio/speech": ("AudioSpeech_Create", "input", speech),
    "audio/transcriptions": ("AudioTranscriptions_Create", "file", _audio_text("transcribe")),
    "audio/translations": ("AudioTranslations_Create", "file", _audio_text("translate")),
    "responses": ("Responses_Create", "input", responses),
}


def _paths(operation: str) -> tuple[str, str]:
    deployments = "/openai/responses" if operation == "responses" else f"/openai/deployments/{{deployment}}/{operation}"
    return deployments, f"/openai/v1/{operation}"


class FakeAzureOpenAI:
    """The fake resource, served by `app`.

    `keys` maps each deployment to the api-key it accepts (or a tuple of them: both during a rotation); a bearer
    token is accepted when `accepts_token(token)` (by default: it is in `tokens`). `requests` logs every request
    received, in order, with the deployment in `extra["deployment"]`, multipart fields in `extra["form"]` (every
    value of each in `extra["form_lists"]`).
    `stream_outcomes` tells, per SSE stream, whether it was sent to the end ("completed") or the client closed it
    first ("closed"); `abandoned` counts `slow` calls whose client hung up while waiting.

    `script(deployment, statuses)` makes the next requests to a deployment fail with those statuses (429 or 500),
    in order; `fault_rates[deployment] = (p429, p500)` makes each request fail at random with those probabilities.
    `hold_error_event()` makes the next `midstream-error-event` stream wait before its error event.
    """

    def __init__(self, keys: dict[str, str], tokens: set[str] | None = None) -> None:
        self.keys = keys
        self.tokens = set(tokens or ())
        self.accepts_token: Callable[[str], bool] = self.tokens.__contains__
        self.requests: list[RecordedRequest] = []
        self.stream_outcomes: list[str] = []
        self.abandoned = 0
        self.url = ""
        self.fault_rates: dict[str, tuple[float, float]] = {}
        self._scripts: dict[str, list[int]] = {}
        self._error_event_release: threading.Event | None = None
        self._random = random.Random(12)
        self._lock = threading.Lock()
        routes = [
            Route(path, self._endpoint(operation), methods=["POST"])
            for operation in OPERATIONS
            for path in _paths(operation)
        ]
        self.app = Starlette(
            routes=routes,
            middleware=[Middleware(_AzureHeaders)],
            exception_handlers={404: self._unrouted, 405: self._unrouted},
        )

    def requests_for(self, deployment: str) -> list[RecordedRequest]:
        with self._lock:
            return [request for request in self.requests if request.extra.get("deployment") == deployment]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.stream_outcomes.clear()
            self.abandoned = 0
            self._scripts.clear()
            self.fault_rates.clear()
            self._error_event_release = None

    def script(self, deployment: str, statuses: list[int]) -> None:
        with self._lock:
            self._scripts[deployment] = list(statuses)

    def hold_error_event(self) -> threading.Event:
        """Make the next `midstream-error-event` stream send its error event only once the returned event
        is set (within HELD_ERROR_SECONDS), so a client reads it apart from the text chunks. Unheld, the
        chunks and the error event go out in one write, and a client most likely reads them at once."""
        release = threading.Event()
        with self._lock:
            self._error_event_release = release
        return release

    def _injected_fault(self, deployment: str) -> int | None:
        with self._lock:
            script = self._scripts.get(deployment)
            if script:
                return script.pop(0)
            rate_429, rate_500 = self.fault_rates.get(deployment, (0.0, 0.0))
            draw = self._random.random()
        return 429 if draw < rate_429 else 500 if draw < rate_429 + rate_500 else None

    async def _record(self, request: Request) -> RecordedRequest:
        recorded = await record(request)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            items = [(key, await _form_value(value)) for key, value in form.multi_items()]
            recorded.extra["form"] = dict(items)
            recorded.extra["form_lists"] = {key: [v for k, v in items if k == key] for key in dict(items)}
        with self._lock:
            self.requests.append(recorded)
        return recorded

    async def _unrouted(self, request: Request, exc: HTTPException) -> Response:
        await self._record(request)
        message = "Resource not found" if exc.status_code == 404 else exc.detail
        return azure_error(exc.status_code, str(exc.status_code), message)

    def _endpoint(self, operation: str) -> Callable[[Request], Awaitable[Response]]:
        azure_operation, required, handler = OPERATIONS[operation]

        async def endpoint(request: Request) -> Response:
            recorded = await self._record(request)
            fields = recorded.json if isinstance(recorded.json, dict) else recorded.extra.get("form", {})
            deployment = request.path_params.get("deployment") or fields.get("model") or ""
            recorded.extra["deployment"] = deployment
            if not recorded.path.startswith("/openai/v1/") and "api-version" not in recorded.query:
                message = "Missing required query parameter 'api-version'."
                return azure_error(400, "BadRequest", message, param="api-version")
            unserved = _unserved_api_version(recorded)
            if unserved is not None:
                return unserved
            if deployment == "slow":
                await self._wait_unless_abandoned(request)
            refusal = await self._refusal(recorded, deployment, azure_operation)
            if refusal is not None:
                return refusal
            if required not in fields:
                return azure_error(400, "BadRequest", f"'{required}' is a required property", param=required)
            answer = handler(recorded)
            return self._stream(answer, deployment) if isinstance(answer, EventStream) else answer

        return endpoint

    async def _wait_unless_abandoned(self, request: Request) -> None:
        """`slow`'s wait; a caller that hangs up meanwhile is counted in `abandoned`."""
        deadline = time.monotonic() + SLOW_SECONDS
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                self.abandoned += 1
                return
            await asyncio.sleep(0.05)

    async def _refusal(self, recorded: RecordedRequest, deployment: str, azure_operation: str) -> Response | None:
        """The fault, 404 or 401 this request gets, if any."""
        injected = self._injected_fault(deployment)
        if deployment == "rate-limited" or injected == 429:
            return _rate_limited(azure_operation, recorded.query.get("api-version", "v1"))
        if deployment == "broken" or injected == 500:
            message = "The server had an error while processing your request. Sorry about that!"
            return azure_error(500, "InternalServerError", message)
        if deployment == "filtered":
            return _content_filtered()
        if deployment in FAULTS:
            return None
        if deployment not in self.keys:
            message = (
                "The API deployment for this resource does not exist. If you created the deployment within "
                "the last 5 minutes, please wait a moment and try again."
            )
            return azure_error(404, "DeploymentNotFound", message)
        if not self._authorised(recorded, deployment):
            message = (
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
                "key for an active subscription and use a correct regional API endpoint for your resource."
            )
            return azure_error(401, "401", message)
        return None

    def _authorised(self, recorded: RecordedRequest, deployment: str) -> bool:
        key = self.keys[deployment]
        accepted = (key,) if isinstance(key, str) else key
        scheme, _, bearer = recorded.headers.get("authorization", "").partition(" ")
        if recorded.headers.get("api-key") in accepted:
            return True
        on_v1 = recorded.path.startswith("/openai/v1/")
        return scheme.lower() == "bearer" and (self.accepts_token(bearer) or (on_v1 and bearer in accepted))

    def _stream(self, answer: EventStream, deployment: str) -> StreamingResponse:
        if deployment == "midstream-error":
            return _DroppedStream(_iterate(answer.events[: answer.kept_on_error]), media_type="text/event-stream")
        if deployment == "midstream-error-event" and answer.error_event is not None:
            events = self._then_error(answer.events[: answer.kept_on_error], answer.error_event)
            return StreamingResponse(events, media_type="text/event-stream")
        if deployment == "empty-stream":
            return StreamingResponse(_iterate([]), media_type="text/event-stream")
        pause = SLOW_STREAM_PAUSE if deployment == "slow-stream" else 0
        return StreamingResponse(self._send(answer.events, pause), media_type="text/event-stream")

    async def _then_error(self, events: list[bytes], error_event: bytes) -> AsyncIterator[bytes]:
        """`events`, then `error_event` once released (see `hold_error_event`); the body then ends normally.
        Unheld, the events and the error event go out in one write."""
        with self._lock:
            release, self._error_event_release = self._error_event_release, None
        if release is None:
            yield b"".join(events) + error_event
            return
        for event in events:
            yield event
        deadline = time.monotonic() + HELD_ERROR_SECONDS
        while not release.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        yield error_event

    async def _send(self, events: list[bytes], pause: float) -> AsyncIterator[bytes]:
        outcome = "closed"
        try:
            for event in events:
                yield event
                await asyncio.sleep(pause)
            outcome = "completed"
        finally:
            with self._lock:
                self.stream_outcomes.append(outcome)


async def _form_value(value: str | UploadFile) -> Any:
    """A form field as recorded: its text, or `(filename, content)` for a file."""
    return value if isinstance(value, str) else (value.filename, await value.read())
