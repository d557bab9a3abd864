"""A fake Azure AI Foundry resource: the Azure AI model inference API.

What Microsoft documents for `https://<resource>.services.ai.azure.com/models`
(the AI Model Inference REST spec, `specification/ai/data-plane/ModelInference`
in Azure/azure-rest-api-specs, and the Foundry Models endpoint docs), checked on
every request:

* `POST /models/chat/completions` and `POST /models/embeddings`; anything else 404;
* `api-version` in the query, one the service publishes (else 400);
* the resource's key in `api-key`, or an Entra ID token as
  `Authorization: Bearer <token>` (the spec's `ApiKeyAuth` and `OAuth2Auth`);
  a key sent as a bearer token, a token in `api-key`, both headers, or none: 401;
* the body's `model` names the deployment (the endpoint routes by it): a
  missing `model` 400, an unknown one 404; chat needs non-empty `messages`,
  each with a known `role`; embeddings need `input` (a string or strings).

Answers are the service's JSON (`chat.completion`, `list` of `embedding`) and
SSE (`chat.completion.chunk` events, `data: [DONE]` at the end, and a last
chunk with the usage and no choices when `stream_options.include_usage` is
set), derived from the request so tests can prove what was sent: the reply is
`"echo: "` plus the last user text (a call of the first tool, with that text
as its `echo` argument, when `tools` are given), token counts are words. As
the service does for non-OpenAI models, `tool_calls` and `reasoning_content`
are sent as `null` when there are none. Deployment `rate-limited` answers 429
with `Retry-After`, `broken` 500, `filtered` a content filter's 400 (with its
`innererror`).
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .server import RecordedRequest, record

#: The model inference API's published versions (preview and GA).
API_VERSIONS = frozenset({"2024-05-01-preview", "2025-04-01", "2025-05-01"})
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
RETRY_AFTER_SECONDS = 3
DEFAULT_DIMENSIONS = 4


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "status": status}}, status, headers)


def _content_filtered() -> JSONResponse:
    """The refusal of a prompt the deployment's content filter blocks."""
    severity = {"filtered": True, "severity": "high"}
    result = {"hate": severity, "self_harm": {"filtered": False, "severity": "safe"}}
    error = {
        "code": "content_filter",
        "message": "The response was filtered due to the prompt triggering the content management policy.",
        "param": "prompt",
        "status": 400,
        "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": result},
    }
    return JSONResponse({"error": error}, 400)


def _words(text: str) -> int:
    return len(text.split())


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


class FakeFoundry:
    """ASGI app of one Foundry resource. `deployments` maps each deployment name to
    the model it serves (the answers' `model`); `accepts_token` judges bearer tokens."""

    def __init__(self, key: str, deployments: dict[str, str], accepts_token: Callable[[str], bool]) -> None:
        self.key = key
        self.deployments = deployments | {name: "Phi-4" for name in ("rate-limited", "broken", "filtered")}
        self.accepts_token = accepts_token
        self.url = ""
        self.requests: list[RecordedRequest] = []
        self.app = Starlette(
            routes=[
                Route("/models/chat/completions", self._admitted(self._chat), methods=["POST"]),
                Route("/models/embeddings", self._admitted(self._embeddings), methods=["POST"]),
            ]
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def clear(self) -> None:
        self.requests.clear()

    async def _admit(self, request: Request) -> tuple[RecordedRequest, Response | None]:
        """The request as recorded, and the service's refusal of it, if any."""
        recorded = await record(request)
        self.requests.append(recorded)
        version = recorded.query.get("api-version")
        if version not in API_VERSIONS:
            return recorded, _error(400, "BadRequest", f"Unsupported or missing api-version: {version!r}.")
        key, authorization = recorded.headers.get("api-key"), recorded.headers.get("authorization")
        token = authorization.removeprefix("Bearer ") if authorization and authorization.startswith("Bearer ") else None
        authorised = (key == self.key and authorization is None) or (
            key is None and token is not None and self.accepts_token(token)
        )
        if not authorised:
            return recorded, _error(401, "Unauthorized", "Access denied due to invalid subscription key or token.")
        body = recorded.json
        deployment = body.get("model") if isinstance(body, dict) else None
        if not isinstance(deployment, str):
            return recorded, _error(400, "BadRequest", "The 'model' field (the deployment name) is required.")
        recorded.extra["deployment"] = deployment
        if deployment not in self.deployments:
            return recorded, _error(404, "DeploymentNotFound", f"Deployment '{deployment}' not found.")
        if deployment == "rate-limited":
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
            return recorded, _error(429, "RateLimitReached", "Rate limit of the deployment reached.", headers)
        if deployment == "broken":
            return recorded, _error(500, "InternalServerError", "The server had an error.")
        if deployment == "filtered":
            return recorded, _content_filtered()
        return recorded, None

    def _admitted(self, answer: Callable[[RecordedRequest], Response]) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint: the request recorded and admitted (`_admit`), then answered by `answer`."""

        async def endpoint(request: Request) -> Response:
            recorded, refusal = await self._admit(request)
            return refusal if refusal is not None else answer(recorded)

        return endpoint

    def _chat(self, recorded: RecordedRequest) -> Response:
        body = recorded.json
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "BadRequest", "'messages' must be a non-empty array.")
        if any(not isinstance(m, dict) or m.get("role") not in ROLES for m in messages):
            return _error(400, "BadRequest", "Every message needs a 'role' of: " + ", ".join(sorted(ROLES)))
        users = [_text(m.get("content")) for m in messages if m["role"] == "user"]
        answered_tool = messages[-1]["role"] == "tool"  # the model answers with what the tool gave
        text = "echo: " + (_text(messages[-1].get("content")) if answered_tool else users[-1] if users else "")
        prompt = sum(_words(_text(m.get("content"))) for m in messages)
        tools = [] if answered_tool else body.get("tools") or []
        call = None
        if tools:
            arguments = json.dumps({"echo": text.removeprefix("echo: ")})
            name = tools[0]["function"]["name"]
            call = {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function", "function": {"name": name}}
            call["function"]["arguments"] = arguments
        completion = _words(text) if call is None else _words(call["function"]["arguments"])
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        model = self.deployments[recorded.extra["deployment"]]
        head = {"id": uuid.uuid4().hex, "created": int(time.time()), "model": model}
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _chunks(head, text, call, usage if include_usage else None)
            return StreamingResponse(events, media_type="text/event-stream")
        message = {"role": "assistant", "content": None if call else text, "reasoning_content": None}
        message["tool_calls"] = [call] if call else None
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if call else "stop", "logprobs": None}
        return JSONResponse(head | {"object": "chat.completion", "choices": [choice], "usage": usage})

    def _embeddings(self, recorded: RecordedRequest) -> Response:
        body = recorded.json
        given = body.get("input")
        inputs = [given] if isinstance(given, str) else given
        if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
            return _error(400, "BadRequest", "'input' must be a string or an array of strings.")
        dimensions = body.get("dimensions") or DEFAULT_DIMENSIONS
        base64_wanted = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(inputs):
            vector = [((len(text) + index + position) % 7) / 7 for position in range(dimensions)]
            packed = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": packed if base64_wanted else vector})
        tokens = sum(_words(text) for text in inputs)
        model = self.deployments[recorded.extra["deployment"]]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"id": uuid.uuid4().hex, "object": "list", "data": data, "model": model, "usage": usage})


def _chunks(
    head: dict[str, Any], text: str, call: dict[str, Any] | None, usage: dict[str, int] | None
) -> Iterator[bytes]:
    """A chat answer as the service streams it: the role, the text a word at a time
    (or the tool call), the finish reason, then the usage when asked for."""

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return (
            f"data: {json.dumps(head | {'object': 'chat.completion.chunk', 'choices': choices} | extra)}\n\n".encode()
        )

    def delta(content: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": content, "finish_reason": finish_reason, "logprobs": None}

    yield event([delta({"role": "assistant", "content": ""})])
    if call is None:
        words = text.split(" ")
        for position, word in enumerate(words):
            yield event([delta({"content": word if position == 0 else " " + word})])
    else:
        yield event([delta({"tool_calls": [call | {"index": 0}]})])
    yield event([delta({}, "tool_calls" if call else "stop")])
    if usage is not None:
        yield event([], usage=usage)
    yield b"data: [DONE]\n\n"
