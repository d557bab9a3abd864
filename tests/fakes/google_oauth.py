"""A fake Google OAuth 2.0 token endpoint for service-account credentials.

google-auth's `service_account.Credentials.refresh()` POSTs a form to the key's
`token_uri` with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and
`assertion=<RS256 JWT>` whose claims carry `iss` (the client email), `aud`
(always https://oauth2.googleapis.com/token) and `scope`. This fake reads the
claims without verifying the signature and issues `ya29.fake-<email>-<n>`, so
the token names the account and each fetch is counted.

`make_service_account` writes the matching key file contents, pointing its
`token_uri` at this fake.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .server import RecordedRequest, record

TOKEN_PATH = "/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def make_service_account(token_uri: str, client_email: str, project_id: str) -> dict[str, str]:
    """A service-account key file's contents with a fresh 2048-bit RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": client_email,
        "client_id": str(secrets.randbelow(10**21)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{client_email}",
        "universe_domain": "googleapis.com",
    }


class InvalidAssertion(ValueError):
    """The grant's assertion is not an RS256 JWT a service account could have signed."""


def _b64url_json(segment: str) -> dict[str, Any]:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError) as error:
        raise InvalidAssertion(f"undecodable JWT segment: {error}") from error
    if not isinstance(decoded, dict):
        raise InvalidAssertion("JWT segment is not a JSON object")
    return decoded


def read_assertion(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (header, claims) of a JWT-bearer assertion; signature not verified."""
    segments = assertion.split(".")
    if len(segments) != 3 or not segments[2]:
        raise InvalidAssertion("assertion is not a signed JWT")
    header, claims = _b64url_json(segments[0]), _b64url_json(segments[1])
    if header.get("alg") != "RS256":
        raise InvalidAssertion(f"JWT alg is {header.get('alg')!r}, expected RS256")
    if not isinstance(claims.get("iss"), str) or not claims["iss"]:
        raise InvalidAssertion("JWT has no iss claim")
    if not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
        raise InvalidAssertion("JWT is expired")
    return header, claims


def _oauth_error(error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=400)


class FakeGoogleOAuth:
    """ASGI app serving `POST /token` (JWT-bearer grant) like oauth2.googleapis.com.

    `tokens_issued` counts fetches per client email; `requests` logs every call
    with `extra["claims"]` holding the assertion's claims when it parsed.
    Tokens live `expires_in` seconds; below google-auth's 225 s refresh
    threshold every use of a token makes google-auth fetch a new one.
    """

    def __init__(self, expires_in: int = 3600) -> None:
        self.expires_in = expires_in
        self.requests: list[RecordedRequest] = []
        self.tokens_issued: dict[str, int] = {}
        self._owners: dict[str, str] = {}
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route(TOKEN_PATH, self._token, methods=["POST"])])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def token_uri(self, base_url: str) -> str:
        """The `token_uri` for key files, given the URL this fake is served at."""
        return base_url + TOKEN_PATH

    def token_owner(self, token: str) -> str | None:
        """The client email a token was issued to, or None if this fake never issued it."""
        with self._lock:
            return self._owners.get(token)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.tokens_issued.clear()

    async def _token(self, request: Request) -> JSONResponse:
        recorded = await record(request)
        with self._lock:
            self.requests.append(recorded)
        form = await request.form()
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return _oauth_error("unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type')}")
        try:
            _, claims = read_assertion(str(form.get("assertion", "")))
        except InvalidAssertion as error:
            return _oauth_error("invalid_grant", f"Invalid JWT: {error}")
        recorded.extra["claims"] = claims
        token = self._issue(claims["iss"])
        return JSONResponse({"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"})

    def _issue(self, client_email: str) -> str:
        with self._lock:
            count = self.tokens_issued.get(client_email, 0) + 1
            self.tokens_issued[client_email] = count
            token = f"ya29.fake-{client_email}-{count}"
            self._owners[token] = client_email
        return token
