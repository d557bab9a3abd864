"""A fake Azure OpenAI resource speaking the real data-plane wire format.

Deployments are routed as Azure does (`/openai/deployments/{name}/...` with an
`api-version` query), authenticated by `api-key` (the deployment's key) or an
accepted Entra bearer token. Answers derive from the request, so tests can
prove what was sent: the reply text is `"echo: "` plus the last user text.

Deployments named after a fault produce it on every route:
`rate-limited` (429 with Retry-After: 7), `broken` (500), `slow` (answers after
5 s), `filtered` (400 content filter), `midstream-error` (a stream whose
connection drops after two chunks).
"""

from __future__ import annotations

import asyncio
import json
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
        self.url = ""
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/openai/deployments/{deployment}/chat/completions", self._chat, methods=["POST"]),
            ]
        )

    def requests_for(self, deployment: str) -> list[RecordedRequest]:
        prefix = f"/openai/deployments/{deployment}/"
        return [request for request in self.requests if request.path.startswith(prefix)]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    async def _admit(self, request: Request) -> tuple[RecordedRequest, Response | None]:
        """Record the request; return an error response when it must not be served."""
        recorded = await record(request)
        deployment = request.path_params["deployment"]
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
        if deployment in ("rate-limited", "broken", "filtered", "slow", "midstream-error"):
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
                await asyncio.sleep(0)
        yield event([{"index": 0, "delta": {}, "finish_reason": "tool_calls" if tool else "stop"}])
        if (body.get("stream_options") or {}).get("include_usage"):
            yield event([], usage=usage)
        yield b"data: [DONE]\n\n"
