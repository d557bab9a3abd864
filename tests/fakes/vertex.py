"""A fake Vertex AI speaking the wire formats LiteLLM uses, per model family.

Served paths are the real ones; LiteLLM builds them when `api_base` is this
fake's root URL (Imagen and Cloud TTS take a full URL as `api_base` instead):

- `POST /{v}/projects/{p}/locations/{l}/publishers/{publisher}/models/{model}:{method}`
  - google `generateContent` / `streamGenerateContent?alt=sse`: Gemini chat,
    function calls, inline media, audio output, Gemini transcription; for a
    model whose name has `tts`, Gemini speech (`gemini_speech`).
  - google `predict`: text embeddings (`instances[].content`) or Imagen
    (`instances[].prompt`).
  - anthropic `rawPredict` / `streamRawPredict`: Claude, Anthropic Messages.
  - mistralai, ai21 `rawPredict` / `streamRawPredict`: OpenAI-style chat.
- `POST /v1/projects/{p}/locations/{l}/endpoints/openapi/chat/completions`:
  Llama, DeepSeek, Qwen, gpt-oss and other MaaS models, OpenAI-style chat.
- `POST /v1/text:synthesize`: Cloud Text-to-Speech, as Google documents it:
  `input` (`text` or `ssml`), `voice` (`languageCode` required, `name`) and
  `audioConfig` (`audioEncoding` one of v1's encodings, `speakingRate` 0.25
  to 4) are required; the answer is `{"audioContent": <base64>}`, LINEAR16
  (and MULAW, ALAW) with a WAV header. The voice's name stands for the model
  (`extra["model"]`), so a voice named after a fault produces it.
- `POST /v2/projects/{p}/locations/{l}/recognizers/{r}:recognize`: Speech-to-Text v2,
  as documented: exactly one of `content` (base64) and `uri`; with the implicit
  recognizer `_`, `config` must name its `model` and `languageCodes` and one
  decoding config (`autoDecodingConfig` or `explicitDecodingConfig`).

Every call needs `Authorization: Bearer <token>` issued by the given
`FakeGoogleOAuth` (else 401 UNAUTHENTICATED); the token's account is recorded
in `extra["account"]` beside `project`, `location`, `publisher`, `model`, `method`.

Answers derive from the request: the reply is `"echo: "` plus the last user
text (or the last tool result). When tools are given and the last turn is the
user's, the model calls the first tool with `{"echo": <last user text>}`.
Usage is deterministic: prompt tokens are the words of every text part plus one
per other part (image, audio, tool call...), completion tokens the reply's words.

A model name containing a fault word produces it: `rate-limited` (429
RESOURCE_EXHAUSTED), `invalid` (400 INVALID_ARGUMENT), `forbidden` (403
PERMISSION_DENIED), `broken` (503 UNAVAILABLE); for Gemini, `blocked` answers
200 with `promptFeedback.blockReason: SAFETY` and no candidates, and `unsafe`
answers 200 with a candidate whose `finishReason` is SAFETY; `long-decode` answers in two
hops (`finishReason: CONTINUATION` with a `continuationToken`, then the rest for the call that
sends the token back, as LiteLLM's Gemini long decoding expects); `signature-check` refuses
(400) a history replaying a thought signature other than Google's skip-validator placeholder.
Streamed, Gemini's `midstream-error` sends its first two chunks and then a 429 RESOURCE_EXHAUSTED
error event, all in one write (as Vertex does within a 200 answer), and `trickle` sends its
stream three bytes per write, a millisecond apart (lines and UTF-8 characters cut across reads).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .google_oauth import FakeGoogleOAuth
from .server import RecordedRequest, record

MODEL_PATH = "/{version}/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}:{method}"
OPENAPI_PATH = "/{version}/projects/{project}/locations/{location}/endpoints/openapi/chat/completions"
SYNTHESIZE_PATH = "/v1/text:synthesize"
RECOGNIZE_PATH = "/v2/projects/{project}/locations/{location}/recognizers/{recognizer}:recognize"
ANTHROPIC_VERSION = "vertex-2023-10-16"
DEFAULT_EMBEDDING_DIMENSIONS = 8
PCM_RATE = 24000
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}
FAULTS = (
    (
        "rate-limited",
        429,
        "Quota exceeded for aiplatform.googleapis.com/"
        "generate_content_requests_per_minute_per_project_per_base_model with base model: {model}. "
        "Please submit a quota increase request.",
    ),
    ("invalid", 400, "Request contains an invalid argument."),
    (
        "forbidden",
        403,
        "Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis.com/"
        "projects/{project}/locations/{location}/publishers/google/models/{model}' (or it may not exist).",
    ),
    ("broken", 503, "The service is currently unavailable."),
)
SAFETY_RATINGS = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def google_error(code: int, message: str) -> JSONResponse:
    """The `google.rpc.Status` error body Google APIs answer with."""
    return JSONResponse({"error": {"code": code, "message": message, "status": GOOGLE_STATUS[code]}}, code)


def words(text: str) -> int:
    return len(text.split())


def leaf_text(value: Any) -> str:
    """Every string inside a JSON value, joined by spaces."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return " ".join(filter(None, (leaf_text(item) for item in value.values())))
    if isinstance(value, list):
        return " ".join(filter(None, (leaf_text(item) for item in value)))
    return ""


def sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


async def iterate(chunks: Iterable[bytes], pace: float = 0.0) -> AsyncIterator[bytes]:
    """`chunks`, one write each; `pace` seconds apart (a provider's pace between its writes)."""
    for position, chunk in enumerate(chunks):
        if position and pace:
            await asyncio.sleep(pace)
        yield chunk


def pieces(text: str) -> list[str]:
    """`text` split into word chunks that concatenate back to it."""
    split = text.split(" ")
    return [piece + " " for piece in split[:-1]] + [split[-1]]


def fake_audio(encoding: str, text: str) -> bytes:
    """Deterministic audio bytes whose header matches `encoding`, content naming `text`."""
    pcm = f"FAKEAUDIO:{text}:".encode() * 4
    headers = {"MP3": b"ID3", "OGG_OPUS": b"OggS" + b"\0" * 24 + b"OpusHead"}
    if encoding in ("LINEAR16", "MULAW", "ALAW"):  # Google wraps these in a WAV header
        return wav(pcm)
    return headers.get(encoding, b"") + pcm


def wav(pcm: bytes) -> bytes:
    """16-bit mono PCM at PCM_RATE wrapped in a WAV header."""
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        PCM_RATE,
        PCM_RATE * 2,
        2,
        16,
        b"data",
        len(pcm),
    )
    return header + pcm


@dataclass(frozen=True)
class Turn:
    """What the fake model answers, whatever the wire format."""

    prompt_tokens: int
    reply: str
    tool: str | None

    @property
    def completion_tokens(self) -> int:
        return words(self.reply)

    @property
    def arguments(self) -> dict[str, str]:
        return {"echo": self.reply.removeprefix("echo: ")}


def make_turn(prompt_tokens: int, last_text: str, answered_tool: bool, tools: list[str]) -> Turn:
    tool = tools[0] if tools and not answered_tool else None
    return Turn(prompt_tokens, "echo: " + last_text, tool)


def fault_for(model: str, project: str, location: str) -> JSONResponse | None:
    for word, code, message in FAULTS:
        if word in model:
            return google_error(code, message.format(model=model, project=project, location=location))
    return None


# --- Gemini -----------------------------------------------------------------------------------


def snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def field(obj: dict[str, Any], name: str) -> Any:
    """A protobuf JSON field, which Google accepts in lowerCamelCase or snake_case."""
    return obj.get(name, obj.get(snake(name)))


def gemini_turn(body: dict[str, Any]) -> Turn:
    contents = body.get("contents") or []
    system = (field(body, "systemInstruction") or {}).get("parts") or []
    prompt = sum(words(p["text"]) if "text" in p else 1 for c in contents for p in c.get("parts", []))
    prompt += sum(words(p.get("text", "")) for p in system)
    last_parts = contents[-1].get("parts", []) if contents else []
    answers = [field(p, "functionResponse") for p in last_parts if field(p, "functionResponse")]
    last_text = leaf_text(answers[-1].get("response")) if answers else " ".join(p.get("text", "") for p in last_parts)
    tools = [
        declaration["name"]
        for tool in body.get("tools") or []
        for declaration in field(tool, "functionDeclarations") or []
    ]
    return make_turn(prompt, last_text.strip(), bool(answers), tools)


def gemini_envelope(model: str, response_id: str, **fields: Any) -> dict[str, Any]:
    return {"modelVersion": model, "createTime": "2025-01-01T00:00:00.000000Z", "responseId": response_id, **fields}


def new_id(prefix: str = "") -> str:
    """A fresh response id: real providers never repeat one."""
    return prefix + uuid.uuid4().hex[:24]


def gemini_usage(turn: Turn, completion_tokens: int | None = None) -> dict[str, Any]:
    completion = turn.completion_tokens if completion_tokens is None else completion_tokens
    return {
        "promptTokenCount": turn.prompt_tokens,
        "candidatesTokenCount": completion,
        "totalTokenCount": turn.prompt_tokens + completion,
        "trafficType": "ON_DEMAND",
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": turn.prompt_tokens}],
        "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": completion}],
    }


def gemini_parts(body: dict[str, Any], turn: Turn, text: str) -> list[dict[str, Any]]:
    """The model's parts: a function call, audio, or text."""
    config = field(body, "generationConfig") or {}
    if turn.tool:
        return [{"functionCall": {"name": turn.tool, "args": turn.arguments}}]
    if "AUDIO" in [modality.upper() for modality in field(config, "responseModalities") or []]:
        data = base64.b64encode(fake_audio("PCM", text)).decode()
        return [{"inlineData": {"mimeType": f"audio/L16;codec=pcm;rate={PCM_RATE}", "data": data}}]
    return [{"text": text}]


def gemini_transcription(body: dict[str, Any], model: str) -> JSONResponse:
    """Gemini transcription (`generationConfig.audioTranscriptionConfig`): names the audio's size."""
    parts = [p for c in body.get("contents", []) for p in c.get("parts", [])]
    audio = [field(p, "inlineData") for p in parts if field(p, "inlineData")]
    size = sum(len(base64.b64decode(item["data"])) for item in audio)
    text = f"transcribed {size} bytes"
    usage = {
        "promptTokenCount": len(audio),
        "candidatesTokenCount": words(text),
        "totalTokenCount": len(audio) + words(text),
        "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": len(audio)}],
    }
    candidate = {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}
    return JSONResponse(gemini_envelope(model, new_id(), candidates=[candidate], usageMetadata=usage))


def gemini_chunks(body: dict[str, Any], turn: Turn, model: str, stream: bool) -> Iterable[dict[str, Any]]:
    """One response, or the stream's chunks (one responseId): usage and finishReason ride on the last."""
    texts = pieces(turn.reply) if stream and not turn.tool else [turn.reply]
    response_id = new_id()
    for position, text in enumerate(texts):
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": gemini_parts(body, turn, text)}}
        if position < len(texts) - 1:
            yield gemini_envelope(model, response_id, candidates=[candidate])
        else:
            last = candidate | {"finishReason": "STOP"}
            yield gemini_envelope(model, response_id, candidates=[last], usageMetadata=gemini_usage(turn))


def gemini_hops(body: dict[str, Any], turn: Turn, model: str, stream: bool) -> Iterable[dict[str, Any]]:
    """A long decode in two hops: the first call's answer stops after its first word with
    `finishReason: CONTINUATION` and a `continuationToken`; the call that sends the token back
    gets the rest. Each hop's usage counts its own output."""
    first, rest = turn.reply.split(" ", 1)
    if body.get("continuationToken") != "hop-2":
        candidate = {"content": {"role": "model", "parts": [{"text": first + " "}]}, "finishReason": "CONTINUATION"}
        usage = gemini_usage(turn, 1)
        yield gemini_envelope(
            model, new_id(), candidates=[candidate | {"continuationToken": "hop-2"}], usageMetadata=usage
        )
        return
    yield from gemini_chunks(body, Turn(turn.prompt_tokens, rest, None), model, stream)


#: Google's documented placeholder that skips thought-signature validation.
SKIP_SIGNATURE = base64.b64encode(b"skip_thought_signature_validator").decode()


def foreign_signature(body: dict[str, Any]) -> bool:
    """Whether the history replays a thought signature this backend did not mint (any but the placeholder)."""
    parts = [part for content in body.get("contents") or [] for part in content.get("parts") or []]
    return any(field(part, "thoughtSignature") not in (None, SKIP_SIGNATURE) for part in parts)


#: Gemini speech's prebuilt voices, as Google lists them.
GEMINI_VOICES = frozenset(
    {
        *("Zephyr", "Puck", "Charon", "Kore", "Fenrir", "Leda", "Orus", "Aoede", "Callirrhoe", "Autonoe"),
        *("Enceladus", "Iapetus", "Umbriel", "Algieba", "Despina", "Erinome", "Algenib", "Rasalgethi"),
        *("Laomedeia", "Achernar", "Alnilam", "Schedar", "Gacrux", "Pulcherrima", "Achird", "Zubenelgenubi"),
        *("Vindemiatrix", "Sadachbia", "Sadaltager", "Sulafat"),
    }
)


def gemini_speech_pcm(voice: str, text: str) -> bytes:
    """The fake's speech for `text` in `voice`: 16-bit samples (an even number of bytes) naming both."""
    spoken = f"{voice}:{text}".encode()
    return spoken + b"\0" * (len(spoken) % 2)


def gemini_speech(body: dict[str, Any], model: str) -> Response:
    """A Gemini TTS model's answer, as Google documents it: the request's one user
    turn of text spoken in `speechConfig.voiceConfig.prebuiltVoiceConfig.voiceName`
    (one of `GEMINI_VOICES`), `generationConfig.responseModalities` exactly
    `["AUDIO"]`; the audio inline as base64 PCM (`audio/L16;codec=pcm;rate=24000`),
    prompt tokens the text's words, candidate tokens the audio's samples."""
    contents = body.get("contents") or []
    parts = [part for content in contents for part in content.get("parts") or []]
    if len(contents) != 1 or contents[0].get("role", "user") != "user" or not all("text" in p for p in parts):
        return google_error(400, "A text-to-speech request takes one user turn of text.")
    config = field(body, "generationConfig") or {}
    if field(config, "responseModalities") != ["AUDIO"]:
        return google_error(400, "Text-to-speech models only answer the AUDIO response modality.")
    voice_config = field(field(field(config, "speechConfig") or {}, "voiceConfig") or {}, "prebuiltVoiceConfig")
    voice = field(voice_config or {}, "voiceName")
    if voice not in GEMINI_VOICES:
        return google_error(400, f"Voice name {voice} is not supported.")
    text = " ".join(part["text"] for part in parts)
    pcm = gemini_speech_pcm(voice, text)
    inline = {"mimeType": f"audio/L16;codec=pcm;rate={PCM_RATE}", "data": base64.b64encode(pcm).decode()}
    candidate = {"content": {"role": "model", "parts": [{"inlineData": inline}]}, "finishReason": "STOP"}
    samples = len(pcm) // 2
    usage = {
        "promptTokenCount": words(text),
        "candidatesTokenCount": samples,
        "totalTokenCount": words(text) + samples,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": words(text)}],
        "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": samples}],
    }
    return JSONResponse(gemini_envelope(model, new_id(), candidates=[candidate], usageMetadata=usage))


def gemini_response(body: dict[str, Any], model: str, stream: bool) -> Response:
    if field(field(body, "generationConfig") or {}, "audioTranscriptionConfig") is not None:
        return gemini_transcription(body, model)
    if "tts" in model and not stream and "blocked" not in model and "unsafe" not in model:
        return gemini_speech(body, model)
    if "signature-check" in model and foreign_signature(body):
        return google_error(400, "Invalid thought signature.")
    turn = gemini_turn(body)
    if "blocked" in model:
        blocked = gemini_envelope(
            model,
            new_id(),
            promptFeedback={"blockReason": "SAFETY", "safetyRatings": SAFETY_RATINGS},
            usageMetadata={"promptTokenCount": turn.prompt_tokens, "totalTokenCount": turn.prompt_tokens},
        )
        chunks = [blocked]
    elif "unsafe" in model:
        candidate = {"finishReason": "SAFETY", "safetyRatings": SAFETY_RATINGS}
        chunks = [gemini_envelope(model, new_id(), candidates=[candidate], usageMetadata=gemini_usage(turn, 0))]
    elif "long-decode" in model:
        chunks = list(gemini_hops(body, turn, model, stream))
    else:
        chunks = list(gemini_chunks(body, turn, model, stream))
    if stream and "midstream-error" in model:
        error = {"code": 429, "message": "Resource exhausted. Please try again later.", "status": "RESOURCE_EXHAUSTED"}
        written = b"".join(sse(chunk) for chunk in [*chunks[:2], {"error": error}])
        return StreamingResponse(iterate([written]), media_type="text/event-stream")
    if stream and "trickle" in model:
        written = b"".join(sse(chunk) for chunk in chunks)
        pieces = (written[start : start + 3] for start in range(0, len(written), 3))
        return StreamingResponse(iterate(pieces, pace=0.001), media_type="text/event-stream")
    if stream:
        return StreamingResponse(iterate(sse(chunk) for chunk in chunks), media_type="text/event-stream")
    return JSONResponse(chunks[0])


# --- Claude (Anthropic Messages) ----------------------------------------------------------------


def anthropic_turn(body: dict[str, Any]) -> Turn:
    def blocks(content: Any) -> list[dict[str, Any]]:
        return [{"type": "text", "text": content}] if isinstance(content, str) else content

    messages = body.get("messages") or []
    system = body.get("system") or []
    prompt = sum(words(b["text"]) if b["type"] == "text" else 1 for m in messages for b in blocks(m["content"]))
    prompt += sum(words(b.get("text", "")) for b in blocks(system))
    last_blocks = blocks(messages[-1]["content"]) if messages else []
    results = [b for b in last_blocks if b["type"] == "tool_result"]
    last_text = leaf_text(results[-1].get("content") if results else [b.get("text", "") for b in last_blocks])
    tools = [tool["name"] for tool in body.get("tools") or []]
    return make_turn(prompt, last_text.strip(), bool(results), tools)


def anthropic_message(turn: Turn, model: str, streaming: bool) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if not streaming:
        tool_use = {"type": "tool_use", "id": "toolu_vrtx_fake_1", "name": turn.tool, "input": turn.arguments}
        content = [tool_use if turn.tool else {"type": "text", "text": turn.reply}]
    return {
        "id": new_id("msg_vrtx_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": None if streaming else ("tool_use" if turn.tool else "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": turn.prompt_tokens,
            "output_tokens": 1 if streaming else turn.completion_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def anthropic_events(turn: Turn, model: str) -> Iterable[bytes]:
    yield sse({"type": "message_start", "message": anthropic_message(turn, model, streaming=True)}, "message_start")
    yield sse({"type": "ping"}, "ping")
    if turn.tool:
        block = {"type": "tool_use", "id": "toolu_vrtx_fake_1", "name": turn.tool, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": json.dumps(turn.arguments)}]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in pieces(turn.reply)]
    yield sse({"type": "content_block_start", "index": 0, "content_block": block}, "content_block_start")
    for delta in deltas:
        yield sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
    yield sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    stop = {"stop_reason": "tool_use" if turn.tool else "end_turn", "stop_sequence": None}
    usage = {"output_tokens": turn.completion_tokens}
    yield sse({"type": "message_delta", "delta": stop, "usage": usage}, "message_delta")
    yield sse({"type": "message_stop"}, "message_stop")


def anthropic_response(body: dict[str, Any], model: str, stream: bool) -> Response:
    if body.get("anthropic_version") != ANTHROPIC_VERSION:
        return google_error(400, f"anthropic_version must be {ANTHROPIC_VERSION}.")
    if not isinstance(body.get("max_tokens"), int):
        return google_error(400, "max_tokens: Field required")
    turn = anthropic_turn(body)
    if stream:
        return StreamingResponse(iterate(anthropic_events(turn, model)), media_type="text/event-stream")
    return JSONResponse(anthropic_message(turn, model, streaming=False))


# --- OpenAI-style chat (MaaS openapi endpoint, Mistral, Jamba) ----------------------------------


def openai_turn(body: dict[str, Any]) -> Turn:
    def parts(content: Any) -> list[dict[str, Any]]:
        return [{"type": "text", "text": content}] if isinstance(content, str) else content or []

    messages = body.get("messages") or []
    prompt = sum(words(p["text"]) if p["type"] == "text" else 1 for m in messages for p in parts(m.get("content")))
    last = messages[-1] if messages else {}
    last_text = leaf_text([p.get("text", "") for p in parts(last.get("content"))])
    tools = [tool["function"]["name"] for tool in body.get("tools") or []]
    return make_turn(prompt, last_text.strip(), last.get("role") == "tool", tools)


def openai_usage(turn: Turn) -> dict[str, int]:
    total = turn.prompt_tokens + turn.completion_tokens
    return {"prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens, "total_tokens": total}


def openai_tool_call(turn: Turn) -> dict[str, Any]:
    function = {"name": turn.tool, "arguments": json.dumps(turn.arguments)}
    return {"id": "call_vrtx_fake_1", "type": "function", "function": function}


def openai_completion(turn: Turn, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None if turn.tool else turn.reply}
    if turn.tool:
        message["tool_calls"] = [openai_tool_call(turn)]
    choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if turn.tool else "stop"}
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": openai_usage(turn),
    }


def openai_chunks(turn: Turn, model: str, usage_on_last: bool, usage_chunk: bool) -> Iterable[bytes]:
    """Chat completion chunks under one id; usage on the finishing chunk (Mistral) or in a last, choiceless one."""
    completion_id, created = new_id("chatcmpl-"), int(time.time())

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        base = {"id": completion_id, "object": "chat.completion.chunk", "created": created}
        return b"data: " + json.dumps(base | {"model": model, "choices": choices} | extra).encode() + b"\n\n"

    def delta(content: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": content, "finish_reason": finish}]

    yield chunk(delta({"role": "assistant", "content": ""}))
    if turn.tool:
        yield chunk(delta({"tool_calls": [{"index": 0, **openai_tool_call(turn)}]}))
    else:
        for piece in pieces(turn.reply):
            yield chunk(delta({"content": piece}))
    finish = "tool_calls" if turn.tool else "stop"
    yield chunk(delta({}, finish), **({"usage": openai_usage(turn)} if usage_on_last else {}))
    if usage_chunk:
        yield chunk([], usage=openai_usage(turn))
    yield b"data: [DONE]\n\n"


def openai_response(body: dict[str, Any], model: str, stream: bool, usage_always: bool) -> Response:
    turn = openai_turn(body)
    if not stream:
        return JSONResponse(openai_completion(turn, model))
    usage_chunk = bool((body.get("stream_options") or {}).get("include_usage")) and not usage_always
    events = openai_chunks(turn, model, usage_on_last=usage_always, usage_chunk=usage_chunk)
    return StreamingResponse(iterate(events), media_type="text/event-stream")


# --- predict: embeddings and Imagen -------------------------------------------------------------


def embedding_values(content: str, dimensions: int) -> list[float]:
    digest = hashlib.sha256(content.encode()).digest()
    return [round(digest[i % len(digest)] / 255, 6) for i in range(dimensions)]


def embeddings_response(body: dict[str, Any], model: str) -> Response:
    instances = body.get("instances") or []
    if model.startswith("gemini-embedding") and len(instances) > 1:
        return google_error(400, f"{model} supports only one instance per request, got {len(instances)}.")
    dimensions = (body.get("parameters") or {}).get("outputDimensionality") or DEFAULT_EMBEDDING_DIMENSIONS
    predictions = [
        {
            "embeddings": {
                "values": embedding_values(item["content"], dimensions),
                "statistics": {"token_count": words(item["content"]), "truncated": False},
            }
        }
        for item in instances
    ]
    characters = sum(len(item["content"]) for item in instances)
    return JSONResponse({"predictions": predictions, "metadata": {"billableCharacterCount": characters}})


def imagen_response(body: dict[str, Any]) -> Response:
    count = (body.get("parameters") or {}).get("sampleCount") or 1
    if not 1 <= count <= 4:
        return google_error(400, f"sampleCount must be between 1 and 4, got {count}.")
    image = {"bytesBase64Encoded": base64.b64encode(TINY_PNG).decode(), "mimeType": "image/png"}
    return JSONResponse({"predictions": [image] * count})


# --- Speech -------------------------------------------------------------------------------------


#: Cloud Text-to-Speech v1's `AudioEncoding` values (AUDIO_ENCODING_UNSPECIFIED is refused).
TTS_ENCODINGS = frozenset({"LINEAR16", "MP3", "OGG_OPUS", "MULAW", "ALAW", "PCM"})


def synthesize_response(body: dict[str, Any]) -> Response:
    given = body.get("input") or {}
    texts = [given[key] for key in ("text", "ssml") if given.get(key)]
    if len(texts) != 1:
        return google_error(400, "Exactly one of `input.text` or `input.ssml` needs to be set.")
    voice, config = body.get("voice"), body.get("audioConfig")
    if not isinstance(voice, dict) or not field(voice, "languageCode"):
        return google_error(400, "voice.language_code is required.")
    if not isinstance(config, dict) or field(config, "audioEncoding") not in TTS_ENCODINGS:
        return google_error(400, "audio_config.audio_encoding must be a supported AudioEncoding.")
    rate = field(config, "speakingRate")
    if rate is not None and not 0.25 <= float(rate) <= 4.0:
        return google_error(400, "audio_config.speaking_rate must be between 0.25 and 4.0.")
    audio = fake_audio(field(config, "audioEncoding"), texts[0])
    return JSONResponse({"audioContent": base64.b64encode(audio).decode()})


def recognize_response(body: dict[str, Any], recognizer: str) -> Response:
    if bool(body.get("content")) == bool(body.get("uri")):
        return google_error(400, "Exactly one of content or uri must be set.")
    config = body.get("config") or {}
    if recognizer == "_" and not (config.get("model") and field(config, "languageCodes")):
        return google_error(400, "The implicit recognizer needs config.model and config.language_codes.")
    if not (field(config, "autoDecodingConfig") is not None or field(config, "explicitDecodingConfig")):
        return google_error(400, "config needs auto_decoding_config or explicit_decoding_config.")
    size = len(base64.b64decode(body.get("content") or ""))
    if not size:
        return google_error(400, "Audio content is empty.")
    language = field(config, "languageCodes")[0]
    result = {
        "alternatives": [{"transcript": f"transcribed {size} bytes", "confidence": 0.9}],
        "resultEndOffset": "1s",
        "languageCode": "en-us" if language == "auto" else language.lower(),
    }
    return JSONResponse({"results": [result], "metadata": {"totalBilledDuration": "1s"}})


class FakeVertexAI:
    """ASGI app serving Vertex AI model routes; `requests` logs every call."""

    def __init__(self, oauth: FakeGoogleOAuth) -> None:
        self.oauth = oauth
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route(MODEL_PATH, self._publisher_model, methods=["POST"]),
                Route(OPENAPI_PATH, self._openapi_chat, methods=["POST"]),
                Route(SYNTHESIZE_PATH, self._synthesize, methods=["POST"]),
                Route(RECOGNIZE_PATH, self._recognize, methods=["POST"]),
                Route("/{path:path}", self._unrouted, methods=["GET", "POST"]),
            ]
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def requests_for(self, model: str) -> list[RecordedRequest]:
        """Calls for `model`: the path's model id, or the body's `model` on the openapi endpoint."""
        with self._lock:
            return [request for request in self.requests if request.extra.get("model") == model]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    async def _admit(self, request: Request, method: str) -> tuple[RecordedRequest, Response | None]:
        """Record the call; return the error response when it must not be served.

        The model comes from the path, else from the body (`model`, Speech-to-Text's
        `config.model`, or Text-to-Speech's voice name).
        """
        recorded = await record(request)
        params = request.path_params
        body = recorded.json if isinstance(recorded.json, dict) else {}
        voice = body.get("voice") if isinstance(body.get("voice"), dict) else {}
        model = (
            params.get("model")
            or body.get("model")
            or (body.get("config") or {}).get("model")
            or voice.get("name")
            or ""
        )
        recorded.extra.update(
            model=model,
            method=method,
            project=params.get("project"),
            location=params.get("location"),
            publisher=params.get("publisher"),
        )
        scheme, _, token = recorded.headers.get("authorization", "").partition(" ")
        account = self.oauth.token_owner(token) if scheme == "Bearer" else None
        recorded.extra["account"] = account
        with self._lock:
            self.requests.append(recorded)
        if account is None:
            return recorded, google_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential.",
            )
        if not isinstance(recorded.json, dict):
            return recorded, google_error(400, "Invalid JSON payload received.")
        return recorded, fault_for(model, params.get("project", ""), params.get("location", ""))

    async def _publisher_model(self, request: Request) -> Response:
        params = request.path_params
        model, method, publisher = params["model"], params["method"], params["publisher"]
        recorded, refusal = await self._admit(request, method)
        if refusal is not None:
            return refusal
        body = recorded.json
        stream = method.startswith("stream")
        if publisher == "google" and method in ("generateContent", "streamGenerateContent"):
            return gemini_response(body, model, stream)
        if publisher == "google" and method == "predict":
            instances = body.get("instances") or [{}]
            return imagen_response(body) if "prompt" in instances[0] else embeddings_response(body, model)
        if publisher == "anthropic" and method in ("rawPredict", "streamRawPredict"):
            return anthropic_response(body, model, stream)
        if publisher in ("mistralai", "ai21") and method in ("rawPredict", "streamRawPredict"):
            return openai_response(body, model, stream, usage_always=publisher == "mistralai")
        return google_error(404, f"Publisher model {publisher}/{model} has no method {method} here.")

    async def _openapi_chat(self, request: Request) -> Response:
        recorded, refusal = await self._admit(request, "chat/completions")
        if refusal is not None:
            return refusal
        body = recorded.json
        return openai_response(body, recorded.extra["model"], bool(body.get("stream")), usage_always=False)

    async def _synthesize(self, request: Request) -> Response:
        recorded, refusal = await self._admit(request, "synthesize")
        return refusal or synthesize_response(recorded.json)

    async def _recognize(self, request: Request) -> Response:
        recorded, refusal = await self._admit(request, "recognize")
        return refusal or recognize_response(recorded.json, request.path_params["recognizer"])

    async def _unrouted(self, request: Request) -> Response:
        """Record a call to a path Vertex AI does not serve (such as a malformed model path), answer 404."""
        recorded = await record(request)
        recorded.extra.update(model=None, method=None, account=None)
        with self._lock:
            self.requests.append(recorded)
        return google_error(404, f"The requested URL {request.url.path} was not found on this server.")
