"""Vertex AI calls the gateway makes itself, where LiteLLM 1.110.2 cannot be used.

LiteLLM's Imagen call copies every extra argument, `vertex_credentials`
included, into the request body it sends to Google, sends no token at all when
`api_base` is set, and fetches a new OAuth token on every call. So image
generation on Vertex goes through this small adapter: Imagen's `:predict`
with a bearer token from credentials cached per service account. `Vertex` is
the transport of Vertex deployments: Imagen for images, `fallback` (Gemini and
Claude chat and Gemini speech, LiteLLM for the rest) for every other operation,
legacy completions, speech and transcription held to what can be sent Google.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, replace
from typing import Any

from ..domain import LLMModel, Operation, gemini_speech
from ..errors import ConfigurationError, InvalidRequest, UpstreamError, UpstreamTimeout
from .base import Answer, Request, Transport, Upstream
from .errors import from_status, lowered, scrub
from .mapper import ProviderCall

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


@dataclass(frozen=True)
class GoogleAudio:
    """What LiteLLM can send Google of a speech or transcription request."""

    what: str
    #: The `response_format`s Google answers, as OpenAI names them, and the one
    #: sent when the caller names none (OpenAI's default), None when one must be named.
    formats: tuple[str, ...]
    default_format: str | None
    #: The request fields LiteLLM passes on to Google (it refuses the others,
    #: or drops them without a word).
    fields: frozenset[str]


#: Legacy completion fields with no chat equivalent: LiteLLM drops them for
#: Gemini (and sends `logprobs`, a count, where Gemini takes a boolean), and
#: sends them as they are to the other families' chat endpoints.
CHAT_HAS_NO = ("suffix", "echo", "best_of", "logprobs")

#: LiteLLM would send speech's `aac` and `pcm` as other encodings (MP3, WAV)
#: and `flac` as one Cloud Text-to-Speech does not have, speech without a
#: format as WAV, and refuse transcripts other than json and text.
GOOGLE_AUDIO: dict[Operation, GoogleAudio] = {
    Operation.AUDIO_TTS: GoogleAudio(
        "speech", ("mp3", "opus", "wav"), "mp3", frozenset({"input", "voice", "response_format", "speed"})
    ),
    Operation.AUDIO_STT: GoogleAudio(
        "transcription", ("json", "text"), "json", frozenset({"file", "language", "response_format"})
    ),
}
#: Gemini speech (`vertex_chat.VertexChat.speech`) answers 24 kHz 16-bit mono PCM,
#: served as it is or in a WAV file; it has no other encoding (OpenAI's default,
#: mp3, included), so a request names one, and it has no speaking rate.
GEMINI_SPEECH = GoogleAudio(
    "Gemini speech", ("wav", "pcm"), None, frozenset({"input", "voice", "response_format", "instructions"})
)


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
            return await self.fallback.whole(model, call, _for_google(model, call.deployment.code, request))
        arguments = call.arguments | {"timeout": call.http_timeout()}
        return Answer(await self.imagen.generate(model.id, call.deployment.code, arguments, request.body))

    async def stream(self, model: LLMModel, call: ProviderCall, request: Request) -> Upstream:
        return await self.fallback.stream(model, call, _for_google(model, call.deployment.code, request))


def _for_google(model: LLMModel, code: str, request: Request) -> Request:
    """`request` as Vertex AI can be sent it for the deployment's `code`, or a 400
    naming the field it cannot: a legacy completion's one prompt (LiteLLM would
    make a list of prompts one conversation, and cannot send token ids) and none
    of the fields a chat has no equivalent of (`CHAT_HAS_NO`); speech and
    transcription's fields and formats (see `GOOGLE_AUDIO`, and `GEMINI_SPEECH`
    for a Gemini speech code), a speech voice named (Google has no voice objects)."""
    if request.operation is Operation.COMPLETION:
        if not isinstance(request.body.get("prompt"), str):
            raise InvalidRequest(f"Model '{model.id}' (Vertex AI) takes one prompt, a string.", param="prompt")
        for name in CHAT_HAS_NO:
            if request.body.get(name) is not None:
                raise InvalidRequest(
                    f"Model '{model.id}' (Vertex AI) answers a completion as a chat, which has no '{name}'.",
                    param=name,
                )
    speaks = request.operation is Operation.AUDIO_TTS and gemini_speech(code)
    audio = GEMINI_SPEECH if speaks else GOOGLE_AUDIO.get(request.operation)
    if audio is None:
        return request
    for name in request.body:
        if name not in audio.fields and name != "model":
            raise InvalidRequest(
                f"Model '{model.id}' (Vertex AI {audio.what}) takes {', '.join(sorted(audio.fields))}; not '{name}'.",
                param=name,
            )
    if request.operation is Operation.AUDIO_TTS and not isinstance(request.body.get("voice"), str):
        raise InvalidRequest(f"Model '{model.id}' (Vertex AI {audio.what}) takes a voice name.", param="voice")
    chosen = request.body.get("response_format") or audio.default_format
    if chosen is None:
        raise InvalidRequest(
            f"Model '{model.id}' (Vertex AI {audio.what}) answers response_format {' or '.join(audio.formats)} "
            "only (not OpenAI's default, mp3): name one.",
            param="response_format",
        )
    if chosen not in audio.formats:
        raise InvalidRequest(
            f"Model '{model.id}' (Vertex AI {audio.what}) answers response_format {', '.join(audio.formats)}; "
            f"got {chosen!r}.",
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
