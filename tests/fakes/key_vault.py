"""Fake Azure Key Vault secrets data plane, for serving over HTTPS.

Speaks the bearer challenge protocol `azure-keyvault-secrets` performs: a request
without an accepted token gets `401` with a `WWW-Authenticate` challenge naming the
tenant and the `https://vault.azure.net` resource; the client then fetches a token
for `https://vault.azure.net/.default` and retries with `Authorization: Bearer ...`.

A vault at `https://127.0.0.1:<port>` fails the client's challenge resource check
(the vault host must be a subdomain of the resource's), so clients need
`verify_challenge_resource=False`; to trust the certificate, the async client takes
`connection_verify=<ca bundle path>`.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .server import RecordedRequest, record

VAULT_RESOURCE = "https://vault.azure.net"
DEFAULT_TENANT_ID = "00000000-0000-0000-0000-0000000000aa"
_SECRET_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")


class TlsFiles(NamedTuple):
    certfile: str
    keyfile: str
    ca_bundle: str


def tls_files(directory: Path) -> TlsFiles:
    """Write a throwaway CA and its server certificate for 127.0.0.1 and localhost."""
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(
        certfile=str(directory / "server.pem"),
        keyfile=str(directory / "server.key"),
        ca_bundle=str(directory / "ca.pem"),
    )
    Path(files.certfile).write_bytes(b"".join(pem.bytes() for pem in server_cert.cert_chain_pems))
    server_cert.private_key_pem.write_to_path(files.keyfile)
    ca.cert_pem.write_to_path(files.ca_bundle)
    return files


@dataclass(frozen=True)
class SecretVersion:
    value: str
    version: str
    created: int
    content_type: str | None = None


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _bundle(base_url: str, name: str, secret: SecretVersion) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "value": secret.value,
        "id": f"{base_url}/secrets/{name}/{secret.version}",
        "attributes": {
            "enabled": True,
            "created": secret.created,
            "updated": secret.created,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        },
    }
    if secret.content_type is not None:
        bundle["contentType"] = secret.content_type
    return bundle


class FakeKeyVault:
    """ASGI app serving Key Vault's secret get/set operations behind the bearer challenge.

    `tokens_accepted(token)` decides which bearer tokens pass (None: any).
    `reads` counts authorized GETs per secret name; `delay_seconds` slows them down.
    """

    def __init__(
        self,
        tokens_accepted: Callable[[str], bool] | None = None,
        *,
        secrets: Mapping[str, str] | None = None,
        delay_seconds: float = 0.0,
        tenant_id: str = DEFAULT_TENANT_ID,
    ) -> None:
        self.tokens_accepted = tokens_accepted
        self.delay_seconds = delay_seconds
        self.tenant_id = tenant_id
        self.reads: Counter[str] = Counter()
        self.requests: list[RecordedRequest] = []
        self._versions: dict[str, list[SecretVersion]] = {}
        for name, value in (secrets or {}).items():
            self.set_secret(name, value)
        self._app = Starlette(
            routes=[
                Route("/secrets/{name}", self._get, methods=["GET"]),
                Route("/secrets/{name}/", self._get, methods=["GET"]),
                Route("/secrets/{name}/{version}", self._get, methods=["GET"]),
                Route("/secrets/{name}", self._put, methods=["PUT"]),
            ]
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)

    def set_secret(self, name: str, value: str, content_type: str | None = None) -> str:
        """Store a new latest version of `name`; returns its version id."""
        return self._store(name, value, content_type).version

    @property
    def challenge(self) -> str:
        """The `WWW-Authenticate` value Key Vault sends with a 401."""
        return f'Bearer authorization="https://login.microsoftonline.com/{self.tenant_id}", resource="{VAULT_RESOURCE}"'

    async def _get(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        rejection = self._rejection(await self._record(request), name)
        if rejection is not None:
            return rejection
        self.reads[name] += 1
        await asyncio.sleep(self.delay_seconds)
        secret = self._find(name, request.path_params.get("version"))
        if secret is None:
            return _error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {name} was not found in this key vault.",
            )
        return JSONResponse(_bundle(_base_url(request), name, secret))

    async def _put(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        recorded = await self._record(request)
        rejection = self._rejection(recorded, name)
        if rejection is not None:
            return rejection
        body = recorded.json
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            return _error(400, "BadParameter", "The request body must have a string 'value'.")
        secret = self._store(name, body["value"], body.get("contentType"))
        return JSONResponse(_bundle(_base_url(request), name, secret))

    async def _record(self, request: Request) -> RecordedRequest:
        recorded = await record(request)
        self.requests.append(recorded)
        return recorded

    def _rejection(self, recorded: RecordedRequest, name: str) -> JSONResponse | None:
        """The error response for a request that may not proceed, else None."""
        problem = self._token_problem(recorded.headers.get("authorization", ""))
        if problem is not None:
            return _error(401, "Unauthorized", problem, headers={"WWW-Authenticate": self.challenge})
        if not recorded.query.get("api-version"):
            return _error(400, "BadParameter", "The request URI must include an api-version.")
        if not _SECRET_NAME.fullmatch(name):
            return _error(400, "BadParameter", f"The request URI contains an invalid name: {name}")
        return None

    def _token_problem(self, authorization: str) -> str | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "AKV10000: Request is missing a Bearer or PoP token."
        if self.tokens_accepted is not None and not self.tokens_accepted(token):
            return "AKV10022: The bearer token was not accepted."
        return None

    def _store(self, name: str, value: str, content_type: str | None) -> SecretVersion:
        secret = SecretVersion(value, uuid.uuid4().hex, int(time.time()), content_type)
        self._versions.setdefault(name, []).append(secret)
        return secret

    def _find(self, name: str, version: str | None) -> SecretVersion | None:
        versions = self._versions.get(name, [])
        if not version:
            return versions[-1] if versions else None
        return next((secret for secret in versions if secret.version == version), None)


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")
