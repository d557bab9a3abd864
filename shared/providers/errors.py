"""Provider failures translated into gateway errors: LiteLLM's exceptions
(`translate`) and the HTTP error statuses of the calls the gateway makes
itself (`from_status`)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import GatewayError, InvalidRequest, RateLimited, UpstreamError, UpstreamRejected, UpstreamTimeout

logger = logging.getLogger(__name__)

#: Upstream answers that mean the gateway's own configuration is wrong (its
#: credential, its deployment name); the caller can do nothing about them.
GATEWAY_SIDE_STATUSES = frozenset({401, 403, 404})

_LITELLM_PREFIX = re.compile(r"^litellm\.\w+:\s*")
#: Fields of a provider's error object passed on beside OpenAI's four.
PASSED_ON = ("innererror", "inner_error")


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value removed."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def lowered(headers: Mapping[Any, Any] | None) -> dict[str, str]:
    """A provider's response headers with lower-cased names (as `from_status` reads them)."""
    return {str(name).lower(): str(value) for name, value in (headers or {}).items()}


def _headers(exc: Exception) -> dict[str, str]:
    headers: Any = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    return lowered(dict(headers or {}))


def _message(exc: Exception, secrets: Iterable[str]) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return scrub(_LITELLM_PREFIX.sub("", str(message)), secrets)


def _scrubbed(value: Any, secrets: tuple[str, ...]) -> Any:
    """A JSON value with every secret removed from its strings."""
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {str(key): _scrubbed(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrubbed(item, secrets) for item in value]
    return value


@dataclass(frozen=True)
class ProviderError:
    """What the caller gets of a provider's `{"error": {...}}` object, secrets removed."""

    message: str | None = None
    code: str | None = None
    param: str | None = None
    #: `innererror` (or `inner_error`), as the provider named it.
    extra: dict[str, Any] = field(default_factory=dict)


def provider_error(error: Any, secrets: Iterable[str]) -> ProviderError:
    """The message, code, param and inner error of a provider's error object
    (Azure's `innererror` says which content filter fired), each only when it
    has the shape OpenAI's error schema gives it."""
    if not isinstance(error, dict):
        return ProviderError()
    hidden = tuple(secrets)

    def text(name: str) -> str | None:
        value = error.get(name)
        return scrub(value, hidden) if isinstance(value, str) and value else None

    extra = {name: _scrubbed(error[name], hidden) for name in PASSED_ON if isinstance(error.get(name), dict)}
    return ProviderError(text("message"), text("code"), text("param"), extra)


def error_object(exc: Exception) -> Any:
    """The provider's own error object, wherever LiteLLM kept it: the
    response's body, its `provider_specific_fields` (Azure content filters),
    a JSON text in its body's message (Azure Responses and images), or in
    its own message after the provider's name (Azure AI Foundry)."""
    response = getattr(exc, "response", None)
    try:
        found = response.json().get("error")  # type: ignore[union-attr]
    except Exception:  # no response, one not read, or not JSON: look elsewhere
        found = None
    if isinstance(found, dict):
        return found
    fields = getattr(exc, "provider_specific_fields", None)
    if isinstance(fields, dict) and isinstance(fields.get("azure_error"), dict):
        return fields["azure_error"]
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]
    if isinstance(body, dict) and _is_json_object(body.get("message")):
        return _error_of(body["message"])
    # LiteLLM's `<Provider>Exception - <the provider's body>` (Azure AI Foundry's errors).
    wrapped = _WRAPPED_BODY.search(str(getattr(exc, "message", "") or ""))
    return _error_of(wrapped.group(1)) if wrapped else None


_WRAPPED_BODY = re.compile(r"\w+Exception - (\{.*\})\s*$", re.DOTALL)


def _is_json_object(text: Any) -> bool:
    return isinstance(text, str) and text.lstrip().startswith("{")


def _error_of(text: str) -> Any:
    """The `error` member of a JSON text, if it is an object holding one."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed.get("error") if isinstance(parsed, dict) else None


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
    hidden = tuple(secrets)
    found = provider_error(error_object(exc), hidden)
    return from_status(
        status,
        found.message or _message(exc, hidden),
        _headers(exc),
        model_id,
        replace(found, code=found.code or getattr(exc, "code", None) or None),
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
    status: int, message: str, headers: dict[str, str], model_id: str, detail: ProviderError | None = None
) -> GatewayError:
    """The gateway error for a provider's HTTP error status (headers lower-cased).
    A 4xx the caller caused keeps the provider's `detail` (code, param, inner error)."""
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
        detail = detail or ProviderError()
        return UpstreamRejected(status, message, code=detail.code, param=detail.param, extra=detail.extra)
    # A 5xx message can carry provider internals (LiteLLM puts tracebacks in some): not passed on.
    return UpstreamError(f"Model '{model_id}' failed upstream (status {status}).")
