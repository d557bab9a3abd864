"""Azure OpenAI calls sent without LiteLLM: chat completions (whole and
streamed) and embeddings.

Azure OpenAI already speaks OpenAI's wire format, so the gateway sends the
caller's (validated) body with the deployment as `model`, to the URL and with
the headers `mapper.py` built, and relays the provider's bytes. This
module moves bytes and turns failures into gateway errors; what callers get
of those bytes is `wire.py`'s business. It never imports LiteLLM, so an
Azure-only worker starts without it: `AzureRelay`, the transport of every
deployment the relay can address, hands its other operations to LiteLLM.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncGenerator, Callable
from typing import Any

import aiohttp

from .. import wire
from ..domain import LLMModel, Operation
from ..errors import GatewayError
from ..wire import Event, Framed, json_bytes
from .aiohttp_client import ConnectionPool, failure, post
from .base import Answer, Request, Transport, Upstream
from .errors import from_status, lowered, provider_error
from .mapper import AzureDeployment, ProviderCall

CHAT_COMPLETIONS = "chat/completions"
EMBEDDINGS = "embeddings"


class AzureRelay:
    """The relay's transport: chat completions and embeddings sent by the
    gateway itself, through the process's connection pool (`pool`); other
    operations go to `fallback`."""

    def __init__(self, pool: ConnectionPool, fallback: Transport) -> None:
        self.pool = pool
        self.fallback = fallback

    async def whole(self, model: LLMModel, call: ProviderCall, request: Request) -> Answer[Any]:
        if request.operation is Operation.CHAT_COMPLETION:
            return await self.completion(_relayed(call), request.body, model.id)
        if request.operation is Operation.EMBEDDINGS:
            return await self.embeddings(_relayed(call), request.body, model.id)
        return await self.fallback.whole(model, call, request)

    async def stream(self, model: LLMModel, call: ProviderCall, request: Request) -> Upstream:
        if request.operation is not Operation.CHAT_COMPLETION:
            return await self.fallback.stream(model, call, request)
        return await self.open_stream(_relayed(call), request.body, model.id, request.caller_wants_usage)

    async def send(
        self,
        deployment: AzureDeployment,
        operation: str,
        body: dict[str, Any],
        model_id: str,
    ) -> aiohttp.ClientResponse:
        """POST `body` to the deployment's `operation`; the response once its status
        is below 400, else the gateway error for it.

        A new connection (TCP and TLS) gets the deployment's connect budget;
        the catalog's `timeout` bounds each wait for bytes from the provider
        (as LiteLLM's does for its reads); the caller's budget is the gateway's.
        """
        payload = json_bytes(body | {"model": deployment.deployment})
        headers = deployment.headers | {"Content-Type": "application/json"}
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=deployment.connect_seconds, sock_read=deployment.timeout
        )
        refused = functools.partial(_status_error, model_id=model_id, deployment=deployment)
        return await post(self.pool.session(), deployment.url(operation), payload, headers, timeout, model_id, refused)

    async def completion(self, deployment: AzureDeployment, body: dict[str, Any], model_id: str) -> Answer[bytes]:
        """A chat completion answered whole (see `wire.relayed_completion`)."""
        return await self._whole(deployment, CHAT_COMPLETIONS, body, model_id, wire.relayed_completion)

    async def embeddings(self, deployment: AzureDeployment, body: dict[str, Any], model_id: str) -> Answer[bytes]:
        """Embeddings, in the encoding the caller asked for (see `wire.relayed_embeddings`)."""
        return await self._whole(deployment, EMBEDDINGS, body, model_id, wire.relayed_embeddings)

    async def open_stream(
        self, deployment: AzureDeployment, body: dict[str, Any], model_id: str, caller_wants_usage: bool
    ) -> RelayedStream:
        """A chat stream, opened (see `wire.RelayedChunks` for what the caller gets of it)."""
        response = await self.send(deployment, CHAT_COMPLETIONS, body, model_id)
        return RelayedStream(response, wire.RelayedChunks(model_id, caller_wants_usage))

    async def _whole(
        self,
        deployment: AzureDeployment,
        operation: str,
        body: dict[str, Any],
        model_id: str,
        shape: Callable[[bytes, str], tuple[bytes, dict[str, Any]]],
    ) -> Answer[bytes]:
        """An answer read whole: `shape` gives the caller's bytes and the parsed body."""
        response = await self.send(deployment, operation, body, model_id)
        try:
            raw = await response.read()
        except Exception as exc:
            raise failure(exc, model_id) from None
        finally:
            response.release()
        body_for_caller, parsed = shape(raw, model_id)
        usage, model = parsed.get("usage"), parsed.get("model")
        return Answer(
            body_for_caller, usage if isinstance(usage, dict) else None, model if isinstance(model, str) else None
        )


def _relayed(call: ProviderCall) -> AzureDeployment:
    """The deployment's address and headers: the mapper gives this transport only deployments that have them."""
    assert call.azure_relay is not None, "a deployment the relay cannot address"
    return call.azure_relay


class RelayedStream:
    """A relayed chat stream (a `base.Upstream`): one frame of kept chunks per read from the provider."""

    def __init__(self, response: aiohttp.ClientResponse, chunks: wire.RelayedChunks) -> None:
        self.response = response
        self.chunks = chunks

    @property
    def usage(self) -> dict[str, Any] | None:
        return self.chunks.usage

    @property
    def model(self) -> str | None:
        return self.chunks.model

    async def events(self) -> AsyncGenerator[Event | None, None]:
        async for data in sse_data(self.response, self.chunks.model_id):
            frame, failure = self.chunks.frame(data)
            yield (None, Framed(frame)) if frame else None
            if failure is not None:
                raise failure

    async def close(self, completed: bool) -> None:
        """The connection goes back to the pool when the stream was read to its end, else it is dropped."""
        if completed:
            self.response.release()
        else:
            self.response.close()


async def sse_data(response: aiohttp.ClientResponse, model_id: str) -> AsyncGenerator[list[bytes], None]:
    """Per read from the provider, the `data:` payloads of the SSE events it completed
    (possibly none): nothing that has arrived is held back, nothing is split."""
    buffer = b""
    pieces = response.content.iter_any()
    while True:
        try:
            piece = await anext(pieces)
        except StopAsyncIteration:
            return
        except Exception as exc:
            raise failure(exc, model_id) from None
        buffer += piece.replace(b"\r\n", b"\n") if b"\r" in piece else piece
        data = []
        while (end := buffer.find(b"\n\n")) >= 0:
            event, buffer = buffer[:end], buffer[end + 2 :]
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    data.append(line[5:].lstrip(b" "))
        yield data


def _status_error(status: int, raw: bytes, headers: Any, model_id: str, deployment: AzureDeployment) -> GatewayError:
    """Azure's `{"error": {"code", "message", "param", "innererror"}}` as the
    gateway's error (see `errors.from_status`); the deployment's credential
    and endpoint are removed from what is passed on."""
    try:
        error = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        error = None
    found = provider_error(error, (deployment.secret, deployment.endpoint))
    message = found.message or f"The provider answered with status {status}."
    return from_status(status, message, lowered(headers), model_id, found)
