"""The HTTP client of the provider calls the gateway sends itself (the Azure
OpenAI relay, Gemini and Claude chat on Vertex): one aiohttp connection pool,
one POST that reads a refusal's body, and aiohttp's failures as gateway errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from ..errors import GatewayError, UpstreamError, UpstreamTimeout

#: Providers' error bodies are small; only this much of one is read.
MAX_ERROR_BYTES = 64 * 1024


class ConnectionPool:
    """One aiohttp connection pool for the provider calls the gateway sends itself:
    unbounded, DNS cached, connections kept alive. It is made on first use (aiohttp
    wants the running event loop) and closed at shutdown."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=120),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def post(
    session: aiohttp.ClientSession,
    url: str,
    payload: bytes,
    headers: Mapping[str, str],
    timeout: aiohttp.ClientTimeout,
    model_id: str,
    refused: Callable[[int, bytes, Any], GatewayError],
) -> aiohttp.ClientResponse:
    """POST `payload` to `url`: the response once its status is below 400; else the
    start of its body (`MAX_ERROR_BYTES`) read and the error `refused` makes of it
    (status, body, headers) raised. A failure to send or read is `failure`'s."""
    try:
        response = await session.post(url, data=payload, headers=headers, timeout=timeout)
    except Exception as exc:
        raise failure(exc, model_id) from None
    if response.status < 400:
        return response
    try:
        raw = await response.content.read(MAX_ERROR_BYTES)
    except Exception as exc:
        raise failure(exc, model_id) from None
    finally:
        response.release()
    raise refused(response.status, raw, response.headers)


def failure(exc: BaseException, model_id: str) -> BaseException:
    """The gateway error for an aiohttp failure; anything else as it is.

    Timeouts are checked first: aiohttp's `ServerTimeoutError` is also a
    `ClientConnectionError`. Messages never carry the provider's text (it
    can hold the URL and so the deployment's address)."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamTimeout(f"Model '{model_id}' did not answer in time.")
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return UpstreamError(f"Model '{model_id}' could not be reached or broke off its answer.")
    return exc
