"""Vertex AI calls the gateway makes itself, where LiteLLM 1.110.2 cannot be used.

LiteLLM's Imagen call copies every extra argument, `vertex_credentials`
included, into the request body it sends to Google, sends no token at all when
`api_base` is set, and fetches a new OAuth token on every call. So image
generation on Vertex goes through this small adapter: Imagen's `:predict`
with a bearer token from credentials cached per service account. `Vertex` is
the transport of Vertex deployments: Imagen for images, LiteLLM for the rest,
speech and transcription held to the formats Google answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import replace
from typing import Any

from ..domain import LLMModel, Operation
from ..errors import ConfigurationError, InvalidRequest, UpstreamError, UpstreamTimeout
from .base import Answer, Request, Transport, Upstream
from .errors import from_status, lowered, scrub
from .mapper import ProviderCall

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
#: Per audio operation: what it is, the `response_format`s Google answers as
#: OpenAI names them, and the one sent when the caller names none (OpenAI's
#: default). LiteLLM would send speech's `aac` and `pcm` as other encodings
#: (MP3, WAV) and `flac` as one Cloud Text-to-Speech does not have, speech
#: without a format as WAV, and refuse transcripts other than json and text.
AUDIO_FORMATS: dict[Operation, tuple[str, tuple[str, ...], str]] = {
    Operation.AUDIO_TTS: ("speech", ("mp3", "opus", "wav"), "mp3"),
    Operation.AUDIO_STT: ("transcription", ("json", "text"), "json"),
}


class GoogleTokens:
    """OAuth access tokens per service account (or Application Default
    Credentials), refreshed by google-auth off the event loop when they expire."""

    def __init__(self) -> None:
        self._credentials: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def token(self, account: dict[str, Any] | None, model_id: str) -> str:
        key = hashlib.sha256(json.dumps(account, sort_keys=True).encode()).hexdigest() if account else "adc"
        async with self._locks.setdefault(key, asyncio.Lock()):
            credentials: Any = self._credentials.get(key)
            if credentials is None or not credentials.valid:
                credentials = await asyncio.to_thread(self._fresh, account, credentials, model_id)
                self._credentials[key] = credentials
            return str(credentials.token)

    @staticmethod
    def _fresh(account: dict[str, Any] | None, credentials: Any, model_id: str) -> Any:
        import google.auth
        import google.auth.transport.requests
        from google.auth import exceptions as google_exceptions
        from google.oauth2 import service_account

        try:
            if credentials is None:
                if account is None:
                    credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
                else:
                    credentials = service_account.Credentials.from_service_account_info(
                        account, scopes=[CLOUD_PLATFORM_SCOPE]
                    )
            credentials.refresh(google.auth.transport.requests.Request())
        except (ValueError, google_exceptions.GoogleAuthError) as exc:
            raise ConfigurationError(
                f"Model '{model_id}' is misconfigured: its Google credentials cannot get a token "
                f"({type(exc).__name__})."
            ) from None
        return credentials


class VertexImagen:
    """Imagen image generation in OpenAI's images response shape (`b64_json`)."""

    def __init__(self, tokens: GoogleTokens) -> None:
        self.tokens = tokens
        self._client: Any = None

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient()
        return self._client

    async def generate(
        self, model_id: str, code: str, arguments: dict[str, Any], body: dict[str, Any]
    ) -> dict[str, Any]:
        """`arguments` are the model's Vertex call arguments (project, location,
        credentials, api_base, timeout); `body` is the caller's request."""
        import httpx

        project, location = arguments["vertex_project"], arguments["vertex_location"]
        base = arguments.get("api_base") or f"https://{location}-aiplatform.googleapis.com"
        url = f"{base.rstrip('/')}/v1/projects/{project}/locations/{location}/publishers/google/models/{code}:predict"
        parameters: dict[str, Any] = {"sampleCount": body.get("n") or 1}
        if body.get("size"):
            parameters["aspectRatio"] = _aspect_ratio(body["size"])
        account = arguments.get("vertex_credentials")
        token = await self.tokens.token(account, model_id)
        try:
            response = await self._http().post(
                url,
                json={"instances": [{"prompt": body["prompt"]}], "parameters": parameters},
                headers={"Authorization": f"Bearer {token}"},
                timeout=arguments.get("timeout"),
            )
        except httpx.TimeoutException:
            raise UpstreamTimeout(f"Model '{model_id}' did not answer in time.") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"Model '{model_id}' could not be reached: {type(exc).__name__}") from None
        if response.status_code >= 400:
            message = scrub(response.text, [token, str((account or {}).get("private_key", ""))])
            raise from_status(response.status_code, message, lowered(response.headers), model_id)
        predictions = response.json().get("predictions", [])
        return {
            "created": int(time.time()),
            "data": [{"b64_json": p["bytesBase64Encoded"]} for p in predictions if "bytesBase64Encoded" in p],
        }

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class Vertex:
    """The transport of Vertex AI deployments: images from Imagen, every other operation through `fallback`."""

    def __init__(self, imagen: VertexImagen, fallback: Transport) -> None:
        self.imagen = imagen
        self.fallback = fallback

    async def whole(self, model: LLMModel, call: ProviderCall, request: Request) -> Answer[Any]:
        if request.operation is not Operation.IMAGES:
            return await self.fallback.whole(model, call, _in_google_formats(model, request))
        arguments = call.arguments | {"timeout": call.http_timeout()}
        return Answer(await self.imagen.generate(model.id, call.deployment.code, arguments, request.body))

    async def stream(self, model: LLMModel, call: ProviderCall, request: Request) -> Upstream:
        return await self.fallback.stream(model, call, request)


def _in_google_formats(model: LLMModel, request: Request) -> Request:
    """A speech or transcription request with a `response_format` Google
    answers (see `AUDIO_FORMATS`); a 400 naming the field for any other."""
    if request.operation not in AUDIO_FORMATS:
        return request
    what, served, default = AUDIO_FORMATS[request.operation]
    chosen = request.body.get("response_format") or default
    if chosen not in served:
        raise InvalidRequest(
            f"Model '{model.id}' (Vertex AI {what}) answers response_format {', '.join(served)}; got {chosen!r}.",
            param="response_format",
        )
    return replace(request, arguments=request.arguments | {"response_format": chosen})


def _aspect_ratio(size: str) -> str:
    """OpenAI's `WIDTHxHEIGHT` as one of Imagen's aspect ratios (closest match)."""
    ratios = {"1:1": 1.0, "9:16": 9 / 16, "16:9": 16 / 9, "3:4": 3 / 4, "4:3": 4 / 3}
    try:
        width, height = (int(part) for part in size.lower().split("x"))
    except ValueError:
        return "1:1"
    return min(ratios, key=lambda name: abs(ratios[name] - width / height))
