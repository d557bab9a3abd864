"""Request bodies: what the gateway checks of each operation's.

Each operation's reader (`chat_completion`, `embedding`, ...) checks a body
and makes it the `Request` the providers read. Only what the gateway itself
needs is validated; every other field is passed on, as
`providers/arguments.py` says: the fields LiteLLM translates as its
arguments, any other in `extra_body`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from . import validation
from .domain import Operation
from .errors import InvalidRequest
from .providers.arguments import (
    CHAT_COMPLETION_FIELDS,
    COMPLETION_FIELDS,
    EMBEDDING_FIELDS,
    IMAGE_FIELDS,
    RESPONSES_FIELDS,
    SPEECH_FIELDS,
    TRANSCRIPTION_FIELDS,
    TRANSLATION_FIELDS,
    litellm_arguments,
    maybe_streamed,
)
from .providers.base import Request

SPEECH_FORMATS: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
TRANSCRIPTION_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
#: OpenAI's limit for an audio upload.
MAX_AUDIO_BYTES = 25 * 1024 * 1024
#: OpenAI's documented limits: inputs per embedding request, images per request,
#: characters of speech input and of an image prompt.
MAX_EMBEDDING_INPUTS = 2048
MAX_IMAGES = 10
MAX_SPEECH_CHARACTERS = 4096
MAX_IMAGE_PROMPT_CHARACTERS = 32_000
#: A legacy completion's most log probabilities per token, and most `best_of` candidates (OpenAI's limits).
MAX_COMPLETION_LOGPROBS = 5
MAX_BEST_OF = 20
#: No embedding model offers more dimensions than this (OpenAI's largest: 3072);
#: an unbounded value would have a provider allocate whatever it is asked for.
MAX_EMBEDDING_DIMENSIONS = 8192


def _required_text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"'{name}' is required and must be a non-empty string.", param=name)
    return value


def _one_of(body: dict[str, Any], name: str, allowed: Any) -> None:
    value = body.get(name)
    if value is not None and value not in allowed:
        raise InvalidRequest(f"'{name}' must be one of: {', '.join(allowed)}; got {value!r}.", param=name)


def _is_token_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(token, int) and not isinstance(token, bool) for token in value)
    )


def _texts_or_tokens(body: dict[str, Any], name: str) -> None:
    """A 400 unless `name` is a non-empty string, array of strings, array of
    token ids or array of token id arrays (an embedding's input, a completion's prompt)."""
    value = body.get(name)
    valid = (
        (isinstance(value, str) and value != "")
        or _is_token_list(value)
        or (isinstance(value, list) and bool(value) and all(isinstance(item, str) and item for item in value))
        or (isinstance(value, list) and bool(value) and all(_is_token_list(item) for item in value))
    )
    if not valid:
        raise InvalidRequest(
            f"'{name}' is required: a non-empty string, array of strings, array of token ids, "
            "or array of token id arrays.",
            param=name,
        )


def embedding(body: dict[str, Any]) -> Request:
    validation.require_model(body)
    _texts_or_tokens(body, "input")
    validation.list_length(body, "input", MAX_EMBEDDING_INPUTS)
    _one_of(body, "encoding_format", ("float", "base64"))
    validation.integer(body, "dimensions", 1, MAX_EMBEDDING_DIMENSIONS)
    validation.kind(body, "user", str, "a string")
    return Request(Operation.EMBEDDINGS, body, litellm_arguments(body, EMBEDDING_FIELDS))


def image_generation(body: dict[str, Any]) -> Request:
    validation.require_model(body)
    _required_text(body, "prompt")
    validation.text_length(body, "prompt", MAX_IMAGE_PROMPT_CHARACTERS)
    validation.integer(body, "n", 1, MAX_IMAGES)
    _one_of(body, "response_format", ("url", "b64_json"))
    validation.kind(body, "size", str, "a string such as 1024x1024")
    return Request(Operation.IMAGES, body, litellm_arguments(body, IMAGE_FIELDS))


def speech(body: dict[str, Any]) -> Request:
    validation.require_model(body)
    _required_text(body, "input")
    validation.text_length(body, "input", MAX_SPEECH_CHARACTERS)
    voice = body.get("voice")
    if not (isinstance(voice, str) and voice) and not isinstance(voice, dict):
        raise InvalidRequest("'voice' is required: a voice name or a voice object.", param="voice")
    _one_of(body, "response_format", tuple(SPEECH_FORMATS))
    validation.number(body, "speed", 0.25, 4.0)
    return Request(Operation.AUDIO_TTS, body, litellm_arguments(body, SPEECH_FIELDS))


def transcription(fields: dict[str, Any]) -> Request:
    """Multipart fields (the file as `(filename, bytes)`), checked."""
    return _audio_upload(fields, "transcribe")


def translation(fields: dict[str, Any]) -> Request:
    """A translation's multipart fields, checked as a transcription's are."""
    return _audio_upload(fields, "translate")


def _audio_upload(fields: dict[str, Any], task: str) -> Request:
    validation.require_model(fields)
    upload = fields.get("file")
    if not isinstance(upload, tuple):
        raise InvalidRequest(f"'file' is required: the audio file to {task}.", param="file")
    if not upload[1]:
        raise InvalidRequest("'file' is empty.", param="file")
    _one_of(fields, "response_format", TRANSCRIPTION_FORMATS)
    temperature = fields.get("temperature")
    if temperature is not None:
        try:
            fields["temperature"] = float(temperature)
        except ValueError:
            raise InvalidRequest("'temperature' must be a number.", param="temperature") from None
        validation.number(fields, "temperature", 0, 1)
    operation, names = (
        (Operation.AUDIO_STT, TRANSCRIPTION_FIELDS)
        if task == "transcribe"
        else (Operation.AUDIO_TRANSLATION, TRANSLATION_FIELDS)
    )
    arguments = litellm_arguments(fields, names)
    arguments.pop("extra_body", None)  # a multipart upload has no JSON body to extend
    return Request(operation, fields, arguments)


def responses(body: dict[str, Any]) -> Request:
    validation.require_model(body)
    value = body.get("input")
    if not (isinstance(value, str) and value) and not (isinstance(value, list) and value):
        raise InvalidRequest("'input' is required: a string or a non-empty array of input items.", param="input")
    if isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise InvalidRequest(f"'input[{index}]' must be an input item (an object).", param=f"input[{index}]")
    validation.kind(body, "stream", bool, "a boolean")
    validation.integer(body, "max_output_tokens", 1)
    validation.integer(body, "max_tool_calls", 1)
    validation.integer(body, "top_logprobs", 0, 20)
    validation.number(body, "temperature", 0, 2)
    validation.number(body, "top_p", 0, 1)
    validation.kind(body, "instructions", str, "a string")
    validation.kind(body, "store", bool, "a boolean")
    previous = body.get("previous_response_id")
    if previous is not None and not (isinstance(previous, str) and previous):
        raise InvalidRequest("'previous_response_id' must be a response id.", param="previous_response_id")
    validation.tools(body.get("tools"), nested=False)
    arguments = litellm_arguments(body, RESPONSES_FIELDS)
    return Request(Operation.RESPONSES, body, arguments, stream=bool(body.get("stream")))


def responses_sent(asked: Request, body: dict[str, Any]) -> Request:
    """The Responses request as sent on: `body` is the caller's, its conversation
    resolved (`stored_responses.ResponseHistory.turn`)."""
    return dataclasses.replace(asked, body=body, arguments=litellm_arguments(body, RESPONSES_FIELDS))


def chat_completion(body: dict[str, Any]) -> Request:
    """The body, checked for what the gateway relies on and what would
    otherwise fail inside LiteLLM or upstream (`validation.chat_completion`).
    A stream always asks the provider for its usage chunk, to meter it; the caller gets it only if asked."""
    validation.chat_completion(body)
    return maybe_streamed(Operation.CHAT_COMPLETION, body, CHAT_COMPLETION_FIELDS)


def completion(body: dict[str, Any]) -> Request:
    """A legacy completion's body (CreateCompletionRequest), checked as a chat
    completion's is for the fields they share."""
    validation.require_model(body)
    _texts_or_tokens(body, "prompt")
    validation.kind(body, "stream", bool, "a boolean")
    validation.kind(body, "stream_options", dict, "an object")
    validation.kind(body, "echo", bool, "a boolean")
    validation.kind(body, "suffix", str, "a string")
    validation.kind(body, "user", str, "a string")
    validation.kind(body, "logit_bias", dict, "an object")
    validation.integer(body, "n", 1, validation.MAX_CHOICES)
    validation.integer(body, "best_of", 1, MAX_BEST_OF)
    validation.integer(body, "max_tokens", 1)
    validation.integer(body, "logprobs", 0, MAX_COMPLETION_LOGPROBS)
    validation.integer(body, "seed", -(2**63), 2**63 - 1)
    validation.number(body, "temperature", 0, 2)
    validation.number(body, "top_p", 0, 1)
    validation.number(body, "presence_penalty", -2, 2)
    validation.number(body, "frequency_penalty", -2, 2)
    validation.stop(body)
    return maybe_streamed(Operation.COMPLETION, body, COMPLETION_FIELDS)
