"""A fake Azure OpenAI resource speaking the real data-plane wire format.

Deployments are routed as Azure does (`/openai/deployments/{name}/...` with an
`api-version` query), authenticated by `api-key` (the deployment's key) or an
accepted Entra bearer token. Answers derive from the request, so tests can
prove what was sent: the reply text is `"echo: "` plus the last user text.

Routes: chat completions (JSON and SSE), embeddings, image generations, speech,
transcriptions (multipart) and the v1 Responses API (JSON and SSE).

Deployments named after a fault produce it on every route:
`rate-limited` (429 with Retry-After: 7), `broken` (500), `slow` (answers after
5 s), `filtered` (400 content filter), `midstream-error` (a stream whose
connection drops after two chunks), `slow-stream` (a chat stream of 40 chunks,
0.1 s apart). `stream_outcomes` tells, per chat stream, whether it was sent to
the end ("completed") or the gateway closed it ("closed").
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .server import RecordedRequest, record

UPSTREAM_MODEL = "gpt-4o-2024-08-06"
RETRY_AFTER_SECONDS = 7
AZURE_HEADERS = {
    "apim-request-id": "5f0d6c1e-fake-apim",
    "x-ms-region": "Sweden Central",
    "x-ratelimit-remaining-requests": "99",
    "x-ratelimit-remaining-tokens": "99000",
}


def _error(http_status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    headers = dict(AZURE_HEADERS)
    if http_status == 429:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    body = {"error": {"code": code, "message": message, **extra}}
    return JSONResponse(body, status_code=http_status, headers=headers)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for part in content or ():
        if part.get("type") == "text":
            parts.append(part["text"])
        elif part.get("type") == "image_url":
            parts.append("[image]")
    return " ".join(parts)


def words(text: str) -> int:
    return len(text.split())


class FakeAzureOpenAI:
    def __init__(self, keys: dict[str, str], tokens: Callable[[str], bool] | None = None) -> None:
        self.keys = keys
        self.accepts_token = tokens or (lambda token: False)
        self.requests: list[RecordedRequest] = []
        self.stream_outcomes: list[str] = []
        self.url = ""
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/openai/deployments/{deployment}/chat/completions", self._chat, methods=["POST"]),
                Route("/openai/deployments/{deployment}/embeddings", self._embeddings, methods=["POST"]),
                Route("/openai/deployments/{deployment}/images/generations", self._images, methods=["POST"]),
                Route("/openai/deployments/{deployment}/audio/speech", self._speech, methods=["POST"]),
                Route("/openai/deployments/{deployment}/audio/transcriptions", self._transcription, methods=["POST"]),
                Route("/openai/v1/responses", self._responses, methods=["POST"]),
            ]
        )

    def requests_for(self, deployment: str) -> list[RecordedRequest]:
        prefix = f"/openai/deployments/{deployment}/"
        return [request for request in self.requests if request.path.startswith(prefix)]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.stream_outcomes.clear()

    async def _admit(self, request: Request) -> tuple[RecordedRequest, Response | None]:
        """Record the request; return an error response when it must not be served."""
        recorded = await record(request)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            recorded.extra["form"] = {
                key: (value if isinstance(value, str) else (value.filename, await value.read()))
                for key, value in form.multi_items()
            }
        deployment = request.path_params.get("deployment") or (recorded.json or {}).get("model", "")
        recorded.extra["deployment"] = deployment
        with self._lock:
            self.requests.append(recorded)
        if "api-version" not in recorded.query:
            return recorded, _error(400, "BadRequest", "api-version query parameter is required.")
        if deployment == "rate-limited":
            return recorded, _error(
                429, "429",
                "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
                f"2024-10-21 have exceeded token rate limit. Please retry after {RETRY_AFTER_SECONDS} seconds.",
            )  # fmt: skip
        if deployment == "broken":
            return recorded, _error(500, "InternalServerError", "The server had an error processing your request.")
        if deployment == "filtered":
            return recorded, _error(
                400, "content_filter",
                "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
                param="prompt", status=400,
                innererror={"code": "ResponsibleAIPolicyViolation",
                            "content_filter_result": {"hate": {"filtered": True, "severity": "high"}}},
            )  # fmt: skip
        if deployment == "slow":
            await asyncio.sleep(5)
        if deployment in ("rate-limited", "broken", "filtered", "slow", "midstream-error", "slow-stream"):
            return recorded, None
        if deployment not in self.keys:
            return recorded, _error(404, "DeploymentNotFound", f"The API deployment {deployment} does not exist.")
        authorization = recorded.headers.get("authorization", "")
        token = authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") else None
        if recorded.headers.get("api-key") != self.keys[deployment] and not (token and self.accepts_token(token)):
            return recorded, _error(401, "401", "Access denied due to invalid subscription key or wrong API endpoint.")
        return recorded, None

    async def _chat(self, request: Request) -> Response:
        recorded, refusal = await self._admit(request)
        if refusal is not None:
            return refusal
        body = recorded.json or {}
        messages = body.get("messages", [])
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        text = "echo: " + _text_of(last_user.get("content"))
        if recorded.extra["deployment"] == "slow-stream":
            text = " ".join(f"w{index}" for index in range(40))
        prompt_tokens = sum(words(_text_of(m.get("content"))) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": words(text),
            "total_tokens": prompt_tokens + words(text),
        }
        tool = (body.get("tools") or [None])[0]
        if body.get("stream"):
            return StreamingResponse(
                self._chat_stream(body, text, tool, usage, recorded.extra["deployment"]),
                media_type="text/event-stream",
                headers=AZURE_HEADERS,
            )
        choices = [self._choice(index, text, tool, body) for index in range(body.get("n") or 1)]
        return JSONResponse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": UPSTREAM_MODEL,
                "system_fingerprint": "fp_fake",
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
                "choices": choices,
                "usage": usage,
            },
            headers=AZURE_HEADERS,
        )

    @staticmethod
    def _tool_call(tool: dict[str, Any], text: str) -> dict[str, Any]:
        arguments = json.dumps({"echo": text.removeprefix("echo: ")})
        return {
            "id": "call_fake_1",
            "type": "function",
            "function": {"name": tool["function"]["name"], "arguments": arguments},
        }

    def _choice(self, index: int, text: str, tool: dict[str, Any] | None, body: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None if tool else text}
        if tool:
            message["tool_calls"] = [self._tool_call(tool, text)]
        choice: dict[str, Any] = {
            "index": index,
            "message": message,
            "finish_reason": "tool_calls" if tool else "stop",
            "content_filter_results": {},
            "logprobs": None,
        }
        if body.get("logprobs"):
            choice["logprobs"] = {
                "content": [{"token": w, "logprob": -0.1, "bytes": list(w.encode()), "top_logprobs": []}
                            for w in text.split()]
            }  # fmt: skip
        return choice

    async def _chat_stream(
        self, body: dict[str, Any], text: str, tool: dict[str, Any] | None, usage: dict[str, int], deployment: str
    ) -> AsyncIterator[bytes]:
        outcome = "closed"
        try:
            async for chunk in self._chat_events(body, text, tool, usage, deployment):
                yield chunk
            outcome = "completed"
        finally:
            self.stream_outcomes.append(outcome)

    async def _chat_events(
        self, body: dict[str, Any], text: str, tool: dict[str, Any] | None, usage: dict[str, int], deployment: str
    ) -> AsyncIterator[bytes]:
        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            chunk = {
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": UPSTREAM_MODEL, "system_fingerprint": "fp_fake", "choices": choices, **extra,
            }  # fmt: skip
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        yield b"data: " + json.dumps({"id": "", "object": "", "created": 0, "model": "", "choices": [],
                                      "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}).encode() + b"\n\n"  # fmt: skip
        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        if tool:
            call = self._tool_call(tool, text)
            yield event([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                          "function": {"name": call["function"]["name"], "arguments": ""}}]}, "finish_reason": None}])  # fmt: skip
            yield event([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {
                          "arguments": call["function"]["arguments"]}}]}, "finish_reason": None}])  # fmt: skip
        else:
            pieces = text.split(" ")
            for position, piece in enumerate(pieces):
                content = piece if position == len(pieces) - 1 else piece + " "
                yield event([{"index": 0, "delta": {"content": content}, "finish_reason": None}])
                if deployment == "midstream-error" and position == 1:
                    raise ConnectionResetError("fake upstream dropped the stream")
                await asyncio.sleep(0.1 if deployment == "slow-stream" else 0)
        yield event([{"index": 0, "delta": {}, "finish_reason": "tool_calls" if tool else "stop"}])
        if (body.get("stream_options") or {}).get("include_usage"):
            yield event([], usage=usage)
        yield b"data: [DONE]\n\n"

    async def _embeddings(self, request: Request) -> Response:
        recorded, refusal = await self._admit(request)
        if refusal is not None:
            return refusal
        body = recorded.json or {}
        inputs = body["input"]
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        dimensions = body.get("dimensions") or 8
        data = []
        for index, item in enumerate(inputs):
            digest = hashlib.sha256(json.dumps(item).encode()).digest()
            vector = [round(digest[i % len(digest)] / 255, 6) for i in range(dimensions)]
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(len(item) if isinstance(item, list) else words(item) for item in inputs)
        return JSONResponse(
            {"object": "list", "data": data, "model": "text-embedding-3-small",
             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
            headers=AZURE_HEADERS,
        )  # fmt: skip

    async def _images(self, request: Request) -> Response:
        recorded, refusal = await self._admit(request)
        if refusal is not None:
            return refusal
        body = recorded.json or {}
        items = []
        for index in range(body.get("n") or 1):
            if body.get("response_format") == "b64_json":
                items.append({"b64_json": base64.b64encode(TINY_PNG).decode(), "revised_prompt": body["prompt"]})
            else:
                items.append({"url": f"https://fake.blob.core.windows.net/images/{index}.png",
                              "revised_prompt": body["prompt"]})  # fmt: skip
        return JSONResponse({"created": int(time.time()), "data": items}, headers=AZURE_HEADERS)

    async def _speech(self, request: Request) -> Response:
        recorded, refusal = await self._admit(request)
        if refusal is not None:
            return refusal
        body = recorded.json or {}
        audio_format = body.get("response_format") or "mp3"
        audio = speech_bytes(audio_format, body["input"])

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(audio), 16):
                yield audio[start : start + 16]

        return StreamingResponse(chunks(), media_type=SPEECH_TYPES[audio_format], headers=AZURE_HEADERS)

    async def _transcription(self, request: Request) -> Response:
        recorded, refusal = await self._admit(request)
        if refusal is not None:
            return refusal
        form = recorded.extra["form"]
        text = f"transcribed {len(form['file'][1])} bytes"
        response_format = form.get("response_format", "json")
        if response_format == "text":
            return Response(text + "\n", media_type="text/plain", headers=AZURE_HEADERS)
        if response_format == "srt":
            return Response(f"1\n00:00:00,000 --> 00:00:01,000\n{text}\n\n", media_type="text/plain")
        if response_format == "vtt":
            return Response(f"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n\n", media_type="text/plain")
        if response_format == "verbose_json":
            verbose: dict[str, Any] = {
                "task": "transcribe", "language": form.get("language", "english"), "duration": 1.0, "text": text,
                "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": 1.0, "text": text, "tokens": [1, 2],
                              "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.0, "no_speech_prob": 0.0}],
            }  # fmt: skip
            if form.get("timestamp_granularities[]") == "word":
                verbose["words"] = [{"word": w, "start": 0.0, "end": 1.0} for w in text.split()]
            return JSONResponse(verbose, headers=AZURE_HEADERS)
        return JSONResponse({"text": text}, headers=AZURE_HEADERS)

    async def _responses(self, request: Request) -> Response:
        recorded, refusal = await self._admit(request)
        if refusal is not None:
            return refusal
        body = recorded.json or {}
        given = body.get("input")
        text = "echo: " + (given if isinstance(given, str) else _text_of(given[-1].get("content")))
        usage = {
            "input_tokens": words(text) - 1, "output_tokens": words(text), "total_tokens": 2 * words(text) - 1,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0},
        }  # fmt: skip
        if body.get("stream"):
            return StreamingResponse(
                response_events(body["model"], text, usage), media_type="text/event-stream", headers=AZURE_HEADERS
            )
        return JSONResponse(response_object(body["model"], text, "completed", usage), headers=AZURE_HEADERS)


TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
SPEECH_TYPES = {
    "mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
    "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm",
}  # fmt: skip


def speech_bytes(audio_format: str, text: str) -> bytes:
    """What the fake 'speaks': deterministic bytes naming the format and the input."""
    return f"FAKEAUDIO:{audio_format}:{text}:".encode() * 4


def _message_item(text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if text else []
    return {"id": "msg_fake", "type": "message", "role": "assistant", "status": status, "content": content}


def response_object(model: str, text: str, status: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": "resp_fake", "object": "response", "created_at": int(time.time()), "status": status,
        "model": model, "output": [_message_item(text, status)] if status == "completed" else [],
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "usage": usage,
        "error": None, "incomplete_details": None, "instructions": None, "metadata": {},
        "temperature": 1.0, "top_p": 1.0, "text": {"format": {"type": "text"}},
    }  # fmt: skip


async def response_events(model: str, text: str, usage: dict[str, Any]) -> AsyncIterator[bytes]:
    """The Responses API event sequence for one text message."""
    sequence = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal sequence
        sequence += 1
        payload = {"type": kind, "sequence_number": sequence, **fields}
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()

    part = {"type": "output_text", "text": "", "annotations": []}
    yield event("response.created", response=response_object(model, "", "in_progress", None))
    yield event("response.in_progress", response=response_object(model, "", "in_progress", None))
    yield event("response.output_item.added", output_index=0, item=_message_item("", "in_progress"))
    yield event("response.content_part.added", item_id="msg_fake", output_index=0, content_index=0, part=part)
    pieces = text.split(" ")
    for position, piece in enumerate(pieces):
        delta = piece if position == len(pieces) - 1 else piece + " "
        yield event("response.output_text.delta", item_id="msg_fake", output_index=0, content_index=0,
                    delta=delta, logprobs=[])  # fmt: skip
    done_part = part | {"text": text}
    yield event("response.output_text.done", item_id="msg_fake", output_index=0, content_index=0, text=text,
                logprobs=[])  # fmt: skip
    yield event("response.content_part.done", item_id="msg_fake", output_index=0, content_index=0, part=done_part)
    yield event("response.output_item.done", output_index=0, item=_message_item(text, "completed"))
    yield event("response.completed", response=response_object(model, text, "completed", usage))
