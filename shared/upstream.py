"""Provider (LiteLLM) exceptions translated into gateway errors."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from .errors import GatewayError, InvalidRequest, RateLimited, UpstreamError, UpstreamRejected, UpstreamTimeout

logger = logging.getLogger(__name__)

#: Upstream answers that mean the gateway's own configuration is wrong (its
#: credential, its deployment name); the caller can do nothing about them.
GATEWAY_SIDE_STATUSES = frozenset({401, 403, 404})

_LITELLM_PREFIX = re.compile(r"^litellm\.\w+:\s*")


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value removed."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def _headers(exc: Exception) -> dict[str, str]:
    headers: Any = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    return {str(k).lower(): str(v) for k, v in dict(headers or {}).items()}


def _message(exc: Exception, secrets: Iterable[str]) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return scrub(_LITELLM_PREFIX.sub("", str(message)), secrets)


def translate(exc: Exception, model_id: str, secrets: Iterable[str] = ()) -> GatewayError | None:
    """The gateway error for a provider exception, or None if it is not one."""
    import openai

    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeout(f"Model '{model_id}' did not answer in time.")
    if isinstance(exc, openai.APIConnectionError):
        if _network_failure(exc):
            return UpstreamError(f"Model '{model_id}' could not be reached.")
        return _not_sent(exc, model_id, secrets)
    status = getattr(exc, "status_code", None)
    if not isinstance(exc, openai.OpenAIError) or not isinstance(status, int):
        return None
    return from_status(
        status,
        _message(exc, secrets),
        _headers(exc),
        model_id,
        code=getattr(exc, "code", None) or None,
    )


def _network_failure(exc: BaseException) -> bool:
    """Whether a connection error was caused by the network (LiteLLM also
    reports its own failures to build a request as connection errors)."""
    import aiohttp
    import httpx

    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, (OSError, TimeoutError, httpx.TransportError, aiohttp.ClientError)):
            return True
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return False


def _not_sent(exc: Exception, model_id: str, secrets: Iterable[str]) -> GatewayError:
    """A request that failed before it left: the provider played no part, so
    it is the caller's 400 (the gateway validates what it can beforehand)."""
    lines = _message(exc, secrets).strip().splitlines()
    first_line = lines[0] if lines else type(exc).__name__
    logger.warning("a request for model %s could not be prepared: %s", model_id, first_line)
    return InvalidRequest(f"The request could not be prepared for model '{model_id}': {first_line[:500]}")


def from_status(
    status: int, message: str, headers: dict[str, str], model_id: str, code: str | None = None
) -> GatewayError:
    """The gateway error for a provider's HTTP error status (headers lower-cased)."""
    if status == 429:
        retry_after = headers.get("retry-after")
        return RateLimited(message, headers={"Retry-After": retry_after} if retry_after else {})
    if status == 408:
        return UpstreamTimeout(f"Model '{model_id}' did not answer in time.")
    if status in GATEWAY_SIDE_STATUSES:
        return UpstreamError(
            f"The provider refused the gateway's request for model '{model_id}' "
            f"(status {status}); the model's configuration needs attention."
        )
    if 400 <= status < 500:
        return UpstreamRejected(status, message, code=code)
    # A 5xx message can carry provider internals (LiteLLM puts tracebacks in some): not passed on.
    return UpstreamError(f"Model '{model_id}' failed upstream (status {status}).")
