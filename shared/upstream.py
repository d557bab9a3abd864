"""Provider (LiteLLM) exceptions translated into gateway errors."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .errors import GatewayError, RateLimited, UpstreamError, UpstreamRejected, UpstreamTimeout

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
        return UpstreamError(f"Model '{model_id}' could not be reached.")
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
