"""Every error a caller can receive, as types.

    GatewayError
    ├── InvalidRequest              400 invalid_request_error
    │   ├── UnsupportedOperation    400 unsupported_operation
    │   └── PayloadTooLarge         413
    ├── AuthenticationFailed        401 authentication_error / invalid_api_key
    ├── PermissionDenied            403 permission_error
    │   └── ApiManagementRequired   403 api_management_required
    ├── ModelNotFound               404 model_not_found
    ├── ProjectNotFound             404 invalid_request_error / project_not_found
    ├── RouteNotFound               404 invalid_request_error / not_found
    ├── MethodNotAllowed            405 invalid_request_error / method_not_allowed, Allow
    ├── UpstreamRejected            upstream 4xx, status, param, code and innererror passed on
    │   └── RateLimited             429 rate_limit_error, Retry-After passed on
    ├── BudgetExhausted             429 insufficient_quota, x-should-retry: false
    ├── LimitReached                429 requests|tokens / rate_limit_exceeded, Retry-After
    ├── UpstreamError               502 api_error / upstream_error
    ├── UpstreamTimeout             504 api_error / timeout
    ├── StoreUnavailable            503 api_error
    │   ├── CatalogUnavailable      503 catalog_unavailable
    │   ├── KeyStoreUnavailable     503 key_store_unavailable
    │   ├── LimitsStoreUnavailable  503 limits_store_unavailable
    │   └── SecretStoreUnavailable  503 secret_store_unavailable
    └── ConfigurationError          500 api_error / configuration_error

`shared.http` turns each into an OpenAI-shaped error body; `shared.providers.errors`
turns provider exceptions into these.
"""

from __future__ import annotations

from typing import Any

#: nginx's status for a request whose client closed the connection first (metered and logged as such).
CLIENT_CLOSED_STATUS = 499


class GatewayError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}
        #: Fields of the error object beyond OpenAI's four (a provider's `innererror`, say).
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                **self.extra,
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class UnsupportedOperation(InvalidRequest):
    code = "unsupported_operation"


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "admin_required"


class ApiManagementRequired(PermissionDenied):
    """A direct call to an app that only API Management may call (shared.gate)."""

    code = "api_management_required"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model",
        )


class ProjectNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "project_not_found"

    def __init__(self, project: str) -> None:
        super().__init__(f"There is no project '{project}'.", param="project_id")


class RouteNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"

    def __init__(self, method: str, path: str) -> None:
        super().__init__(f"Invalid URL ({method} {path}): no such endpoint.")


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"

    def __init__(self, method: str, path: str, allowed: list[str]) -> None:
        super().__init__(
            f"{method} is not allowed on {path}; use {' or '.join(allowed)}.",
            headers={"Allow": ", ".join(allowed)},
        )


class UpstreamRejected(GatewayError):
    """The provider refused the request (4xx); its status is passed on."""

    type = "invalid_request_error"

    def __init__(self, status: int, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.status = status


class RateLimited(UpstreamRejected):
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(429, message, **kwargs)


class BudgetExhausted(GatewayError):
    """A project's or key's budget is spent for its period (`shared.limits`): the SDKs do not retry."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"x-should-retry": "false"})


class LimitReached(GatewayError):
    """A rate limit of the gateway's own (`shared.limits`) is reached: retry after `retry_after` seconds."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, kind: str, retry_after: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers=(headers or {}) | {"Retry-After": str(max(1, retry_after))})
        self.type = kind


class UpstreamError(GatewayError):
    status = 502
    code = "upstream_error"


class UpstreamTimeout(GatewayError):
    status = 504
    code = "timeout"


class StoreUnavailable(GatewayError):
    """A store the gateway depends on (Cosmos, the key store) cannot be read."""

    status = 503
    code = "store_unavailable"


class CatalogUnavailable(StoreUnavailable):
    code = "catalog_unavailable"


class KeyStoreUnavailable(StoreUnavailable):
    code = "key_store_unavailable"


class LimitsStoreUnavailable(StoreUnavailable):
    code = "limits_store_unavailable"


class SecretStoreUnavailable(StoreUnavailable):
    code = "secret_store_unavailable"


class ConfigurationError(GatewayError):
    status = 500
    code = "configuration_error"
