"""HTTP in and out: the one place that maps results and errors to responses.

Handlers pass the Functions (Starlette) request and a gateway use case (an
`Endpoint`) to `respond`; everything else about HTTP happens here, but for
reading the request, which the use case does through `inbound.Inbound`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from . import telemetry
from .errors import CLIENT_CLOSED_STATUS, GatewayError, MethodNotAllowed, RouteNotFound
from .gate import Gate
from .inbound import Inbound
from .wire import Event, Framed, json_bytes

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


@dataclass
class EventStream:
    """A result sent as server-sent events: JSON events, then `data: [DONE]`.

    `events` yields (event name or None, payload); a `Framed` payload is sent
    as it is. Errors raised while it is being sent end the stream with an
    `error` event.
    """

    events: AsyncGenerator[Event, None]
    headers: dict[str, str] = field(default_factory=dict)
    done_marker: bool = True


@dataclass
class Content:
    """A non-JSON body (audio, plain text), whole or as an async byte stream."""

    body: bytes | AsyncIterator[bytes]
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class JSONResult:
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200


Result = JSONResult | EventStream | Content


def request_id_for(request: Request) -> str:
    """The caller's `x-request-id` when it is sane, else a new one."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _SAFE_REQUEST_ID.match(given) else uuid.uuid4().hex


#: What serves one route: a gateway use case, or the 404/405 of `unrouted`.
Endpoint = Callable[[Inbound], Awaitable[Result]]


async def respond(request: Request, endpoint: Endpoint, max_body_bytes: int, gate: Gate) -> Response:
    """Run `endpoint` for `request` and turn its result or error into a response.

    A caller who hangs up while the endpoint runs cancels it, and so the
    upstream call: no work goes on for a caller who left. A request the gate
    refuses is answered before anything else about it is looked at. HEAD
    (on the routes that declare it) is answered as GET is: the server, uvicorn
    both locally and in the Python worker, sends the status and headers
    (`content-length` too) and leaves the body out.
    """
    request_id = request_id_for(request)
    if (refusal := await gate.refusal(request.url.path, request.headers)) is not None:
        return error_response(refusal, request_id)
    return await telemetry.traced_request(
        request, request_id, lambda: _respond(request, request_id, endpoint, max_body_bytes)
    )


async def _respond(request: Request, request_id: str, endpoint: Endpoint, max_body_bytes: int) -> Response:
    inbound = Inbound(request, request_id, max_body_bytes)
    work = asyncio.ensure_future(endpoint(inbound))
    watch = asyncio.ensure_future(_hang_up(request, inbound))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not work.done():
        work.cancel()
        logger.info("request %s: the caller hung up; its upstream call was cancelled", request_id)
        return Response(status_code=CLIENT_CLOSED_STATUS, headers={REQUEST_ID_HEADER: request_id})
    try:
        result = work.result()
    except GatewayError as exc:
        if exc.status >= 500:
            logger.warning("request %s failed: %s", request_id, exc.message)
        return error_response(exc, request_id)
    except Exception:
        logger.exception("request %s failed with an unexpected error", request_id)
        return error_response(internal_error(request_id), request_id)
    try:
        return to_response(result, request_id)
    except Exception:
        logger.exception("request %s: its result could not be encoded", request_id)
        return error_response(internal_error(request_id), request_id)


async def _hang_up(request: Request, inbound: Inbound) -> None:
    """Return when the caller disconnects (watched only once the body is read,
    so the watcher never takes body chunks from the endpoint)."""
    await inbound.body_read.wait()
    while (await request.receive())["type"] != "http.disconnect":
        pass


def internal_error(request_id: str) -> GatewayError:
    return GatewayError(
        f"The gateway failed to process the request. Quote request id {request_id} when reporting this."
    )


def error_response(error: GatewayError, request_id: str) -> Response:
    """The error as OpenAI's JSON body; always encodable (see `json_bytes`)."""
    headers = {**error.headers, REQUEST_ID_HEADER: request_id}
    return Response(json_bytes(error.body()), status_code=error.status, media_type="application/json", headers=headers)


def to_response(result: Result, request_id: str) -> Response:
    headers = {**result.headers, REQUEST_ID_HEADER: request_id}
    if isinstance(result, JSONResult):
        return Response(
            json_bytes(result.body),
            status_code=result.status,
            media_type="application/json",
            headers=headers,
        )
    if isinstance(result, EventStream):
        headers |= {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(
            _server_sent_events(result, request_id), media_type="text/event-stream", headers=headers
        )
    if isinstance(result.body, bytes):
        return Response(result.body, media_type=result.media_type, headers=headers)
    return StreamingResponse(result.body, media_type=result.media_type, headers=headers)


#: A function's route template (`v1/models/{model_id}`) and HTTP methods.
Route = tuple[str, frozenset[str]]


def http_route(function: Any) -> Route | None:
    """A Functions function's route and methods (GET when it names none), or None when it is not HTTP-triggered."""
    trigger = function.get_trigger()
    if getattr(trigger, "route", None) is None:
        return None
    return trigger.route, frozenset(str(getattr(method, "value", method)) for method in trigger.methods or ["GET"])


def unrouted(routes: list[Route]) -> Endpoint:
    """The endpoint for a request no function serves: 405 (with `Allow`)
    when its path exists for other methods, else 404. `routes` are the
    functions' route templates (`v1/models/{model_id}`) and methods."""
    patterns = [(_template_pattern(template), methods) for template, methods in routes]

    async def endpoint(inbound: Inbound) -> Result:
        path = inbound.path.lstrip("/")
        allowed = sorted({m for pattern, methods in patterns if pattern.fullmatch(path) for m in methods})
        if allowed:
            raise MethodNotAllowed(inbound.method, inbound.path, allowed)
        raise RouteNotFound(inbound.method, inbound.path)

    return endpoint


def _template_pattern(template: str) -> re.Pattern[str]:
    """A regular expression for a Functions route template; catch-all
    parameters (`{*rest}`) match nothing, so the catch-all itself never counts."""
    pattern = ""
    for literal, parameter in re.findall(r"([^{]*)(\{[^}]*\}|$)", template.strip("/")):
        pattern += re.escape(literal)
        if parameter.startswith("{*"):
            return re.compile(r"(?!)")
        if parameter:
            pattern += "[^/]+"
    return re.compile(pattern)


def _sse(event: str | None, payload: Any) -> bytes:
    data = payload if isinstance(payload, (bytes, str)) else json_bytes(payload)
    if isinstance(data, str):
        data = data.encode()
    prefix = f"event: {event}\n".encode() if event else b""
    return prefix + b"data: " + data + b"\n\n"


async def _server_sent_events(stream: EventStream, request_id: str) -> AsyncIterator[bytes]:
    events = stream.events
    try:
        async for event, payload in events:
            yield payload.data if isinstance(payload, Framed) else _sse(event, payload)
    except GatewayError as exc:
        logger.warning("stream %s ended by an error: %s", request_id, exc.message)
        yield _sse("error", exc.body())
    except Exception:
        logger.exception("stream %s failed with an unexpected error", request_id)
        yield _sse("error", internal_error(request_id).body())
    finally:
        await events.aclose()
    if stream.done_marker:
        yield b"data: [DONE]\n\n"
