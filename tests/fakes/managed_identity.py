"""Fake Azure App Service / Functions managed identity endpoint (api-version 2019-08-01).

azure-identity's `ManagedIdentityCredential` (and so `DefaultAzureCredential`) picks
this protocol when `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set, and then sends
`GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<scope without /.default>`
with header `X-IDENTITY-HEADER: {IDENTITY_HEADER}`.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlparse

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .server import RecordedRequest, record

TOKEN_PATH = "/msi/token"
API_VERSION = "2019-08-01"
SYSTEM_CLIENT_ID = "5e29463d-71da-4fe0-8e69-999b57db23b0"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"statusCode": status, "message": message}, status_code=status)


class FakeManagedIdentity:
    """ASGI app serving `GET /msi/token` like the App Service identity endpoint.

    Tokens are `mi-token-<resource host>-<n>`, valid for `lifetime_seconds`.
    """

    def __init__(self, header_secret: str, lifetime_seconds: int = 3600) -> None:
        self.header_secret = header_secret
        self.lifetime_seconds = lifetime_seconds
        self.tokens_issued: list[tuple[str, str]] = []
        self.requests: list[RecordedRequest] = []
        self._app = Starlette(routes=[Route(TOKEN_PATH, self._token, methods=["GET"])])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)

    def environment(self, base_url: str) -> dict[str, str]:
        """The env vars that point azure-identity at this fake served at `base_url`."""
        return {"IDENTITY_ENDPOINT": base_url + TOKEN_PATH, "IDENTITY_HEADER": self.header_secret}

    async def _token(self, request: Request) -> JSONResponse:
        recorded = await record(request)
        self.requests.append(recorded)
        if recorded.headers.get("x-identity-header") != self.header_secret:
            return _error(401, "X-IDENTITY-HEADER is missing or wrong.")
        if recorded.query.get("api-version") != API_VERSION:
            return _error(400, f"api-version must be {API_VERSION}.")
        resource = recorded.query.get("resource")
        if not resource:
            return _error(400, "resource is required.")
        return JSONResponse(self._issue(resource, recorded.query.get("client_id")))

    def _issue(self, resource: str, client_id: str | None) -> dict[str, str]:
        host = urlparse(resource).hostname or resource
        token = f"mi-token-{host}-{len(self.tokens_issued) + 1}"
        self.tokens_issued.append((resource, token))
        return {
            "access_token": token,
            "expires_on": str(int(time.time()) + self.lifetime_seconds),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id or SYSTEM_CLIENT_ID,
        }
