"""Embeddings, images, speech, transcription and the Responses API, end to end."""

import base64
import struct

import httpx
import openai
import pytest
from openai.types import CreateEmbeddingResponse, ImagesResponse
from openai.types.audio import Transcription
from openai.types.responses import Response as ResponsesResponse

from tests.conftest import EVERY_OPERATION, UPSTREAM_KEYS, azure_entry, gateway_env
from tests.fakes.azure_openai import SPEECH_TYPES, speech_bytes
from tests.support import running_gateway, wav_bytes, write_catalog

# Embeddings


@pytest.mark.parametrize(
    ("given", "count"),
    [("one sentence", 1), (["first", "second one"], 2), ([101, 2023, 102], 1), ([[1, 2], [3, 4, 5]], 2)],
)
def test_embeddings_for_every_input_shape(client, fake_azure, given, count):
    result = client.embeddings.create(model="embed-only", input=given, encoding_format="float")

    CreateEmbeddingResponse.model_validate(result.to_dict())
    assert [item.index for item in result.data] == list(range(count))
    assert all(len(item.embedding) == 8 for item in result.data)
    assert result.usage.prompt_tokens > 0
    (upstream,) = fake_azure.requests
    assert upstream.path == "/openai/deployments/dep-a/embeddings"
    assert upstream.json["input"] == given
    assert upstream.headers["api-key"] == UPSTREAM_KEYS["dep-a"]


def test_embeddings_dimensions_base64_and_user_pass_through(gateway, fake_azure):
    response = httpx.post(
        f"{gateway.url}/v1/embeddings",
        json={"model": "embed-only", "input": "x", "dimensions": 4, "encoding_format": "base64", "user": "u-1"},
    )
    assert response.status_code == 200, response.text
    vector = struct.unpack("<4f", base64.b64decode(response.json()["data"][0]["embedding"]))
    assert len(vector) == 4
    sent = fake_azure.requests[0].json
    assert (sent["dimensions"], sent["encoding_format"], sent["user"]) == (4, "base64", "u-1")


def test_the_sdk_default_base64_embeddings_decode_to_floats(client):
    result = client.embeddings.create(model="embed-only", input="decode me", dimensions=6)
    assert len(result.data[0].embedding) == 6
    assert all(isinstance(value, float) for value in result.data[0].embedding)


# Images


def test_images_as_urls_and_as_base64(client, fake_azure):
    urls = client.images.generate(
        model="image-model", prompt="a red fox", n=2, size="1024x1024", quality="hd", style="vivid"
    )
    ImagesResponse.model_validate(urls.to_dict())
    assert len(urls.data) == 2 and urls.data[0].url.startswith("https://")
    assert urls.data[0].revised_prompt == "a red fox"
    sent = fake_azure.requests[0].json
    assert (sent["n"], sent["size"], sent["quality"], sent["style"]) == (2, "1024x1024", "hd", "vivid")

    encoded = client.images.generate(model="image-model", prompt="a red fox", response_format="b64_json")
    assert base64.b64decode(encoded.data[0].b64_json).startswith(b"\x89PNG")
    assert fake_azure.requests[1].json["response_format"] == "b64_json"


# Speech


@pytest.mark.parametrize("audio_format", sorted(SPEECH_TYPES))
def test_speech_returns_the_audio_with_its_content_type(client, fake_azure, audio_format):
    response = client.audio.speech.create(
        model="tts-model",
        voice="alloy",
        input="say this",
        response_format=audio_format,
        speed=1.25,
        instructions="calm",
    )
    assert response.content == speech_bytes(audio_format, "say this")
    assert response.response.headers["content-type"] == SPEECH_TYPES[audio_format]
    sent = fake_azure.requests[0].json
    assert (sent["voice"], sent["speed"], sent["instructions"]) == ("alloy", 1.25, "calm")


def test_speech_with_a_streaming_response(client):
    with client.audio.speech.with_streaming_response.create(
        model="tts-model", voice="nova", input="stream me"
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        received = b"".join(response.iter_bytes())
    assert received == speech_bytes("mp3", "stream me")


# Transcription


def test_transcription_json_and_verbose_json(client, fake_azure):
    audio = wav_bytes()
    result = client.audio.transcriptions.create(
        model="stt-model", file=("clip.wav", audio), language="en", prompt="names", temperature=0.2
    )
    Transcription.model_validate(result.to_dict())
    assert result.text == f"transcribed {len(audio)} bytes"
    form = fake_azure.requests[0].extra["form"]
    assert form["file"] == ("clip.wav", audio)
    assert (form["language"], form["prompt"], float(form["temperature"])) == ("en", "names", 0.2)

    verbose = client.audio.transcriptions.create(
        model="stt-model", file=("clip.wav", audio), response_format="verbose_json", timestamp_granularities=["word"]
    )
    assert verbose.language == "en" or verbose.language
    assert verbose.words and verbose.words[0].word == "transcribed"
    assert fake_azure.requests[1].extra["form"]["timestamp_granularities[]"] == "word"


@pytest.mark.parametrize("text_format", ["text", "srt", "vtt"])
def test_text_transcription_formats_come_back_as_text(gateway, text_format):
    audio = wav_bytes()
    response = httpx.post(
        f"{gateway.url}/v1/audio/transcriptions",
        data={"model": "stt-model", "response_format": text_format},
        files={"file": ("clip.wav", audio, "audio/wav")},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert f"transcribed {len(audio)} bytes" in response.text
    assert not response.text.startswith('"')


def test_transcription_through_the_sdk_as_text(client):
    text = client.audio.transcriptions.create(model="stt-model", file=("a.wav", wav_bytes()), response_format="text")
    assert isinstance(text, str) and text.startswith("transcribed")


def test_an_upload_over_25_mb_is_a_413(gateway):
    response = httpx.post(
        f"{gateway.url}/v1/audio/transcriptions",
        data={"model": "stt-model"},
        files={"file": ("big.wav", b"\0" * (26 * 1024 * 1024), "audio/wav")},
        timeout=60,
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"


SMALL_REQUEST_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def small_bodies(fake_azure, tmp_path_factory):
    """A gateway whose MAX_REQUEST_BYTES is 64 KiB."""
    directory = tmp_path_factory.mktemp("small-bodies")
    catalog = write_catalog(
        directory / "models.json", [azure_entry("stt-model", "dep-a", fake_azure.url, operations=["audio_stt"])]
    )
    env = gateway_env(MODELS_FILE=str(catalog), MAX_REQUEST_BYTES=str(SMALL_REQUEST_BYTES))
    with running_gateway(directory, env) as process:
        yield process


def test_an_upload_over_max_request_bytes_is_the_same_413_as_a_json_body(small_bodies, fake_azure):
    client = small_bodies.client()
    assert client.audio.transcriptions.create(model="stt-model", file=("small.wav", wav_bytes(0.5))).text
    fake_azure.clear()
    json_body = httpx.post(f"{small_bodies.url}/v1/chat/completions", content=b"x" * (SMALL_REQUEST_BYTES + 1))
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model="stt-model", file=("big.wav", wav_bytes(5)))
    assert caught.value.status_code == 413
    assert caught.value.body == json_body.json()["error"]
    assert caught.value.body["code"] == "request_too_large"

    def chunked():  # no Content-Length: the body is refused once it passes the limit
        yield b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nstt-model\r\n'
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for _ in range(100):
            yield b"\0" * 8192

    response = httpx.post(
        f"{small_bodies.url}/v1/audio/transcriptions",
        content=chunked(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 413
    assert response.json() == json_body.json()
    assert fake_azure.requests == []


# Responses API


def test_responses_plain(client, fake_azure):
    response = client.responses.create(model="responses-model", input="hello responses", instructions="be brief")
    ResponsesResponse.model_validate(response.to_dict())
    assert response.output_text == "echo: hello responses"
    assert response.model == "responses-model"
    assert response.usage.output_tokens == 3
    (upstream,) = fake_azure.requests
    assert upstream.path == "/openai/v1/responses"
    assert upstream.json["instructions"] == "be brief"
    assert upstream.headers["api-key"] == UPSTREAM_KEYS["dep-b"]


def test_responses_streaming_events(client):
    events = list(client.responses.create(model="responses-model", input="stream it", stream=True))
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: stream it"
    assert events[-1].response.output_text == "echo: stream it"
    assert events[-1].response.model == "responses-model"


# The catalog's operations, and malformed input


@pytest.mark.parametrize(
    ("path", "body", "operation"),
    [
        ("/v1/embeddings", {"model": "chat-a", "input": "x"}, "embeddings"),
        ("/v1/images/generations", {"model": "chat-a", "prompt": "x"}, "images"),
        ("/v1/audio/speech", {"model": "chat-a", "input": "x", "voice": "alloy"}, "audio_tts"),
        ("/v1/responses", {"model": "chat-a", "input": "x"}, "Responses"),
        (
            "/v1/chat/completions",
            {"model": "tts-model", "messages": [{"role": "user", "content": "x"}]},
            "ChatCompletion",
        ),
    ],
)
def test_every_endpoint_enforces_the_catalog_operations(gateway, fake_azure, path, body, operation):
    response = httpx.post(gateway.url + path, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unsupported_operation"
    assert body["model"] in error["message"] and operation in error["message"]
    assert fake_azure.requests == []


def test_transcription_enforces_the_catalog_operations(gateway):
    response = httpx.post(
        f"{gateway.url}/v1/audio/transcriptions", data={"model": "tts-model"}, files={"file": ("a.wav", wav_bytes())}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_operation"


def test_models_show_what_each_model_supports(client):
    models = {model.id: model.model_extra["operations"] for model in client.models.list()}
    assert models["every-operation"] == EVERY_OPERATION
    assert models["tts-model"] == ["audio_tts"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/embeddings", {"model": "embed-only"}, "input"),
        ("/v1/embeddings", {"model": "embed-only", "input": []}, "input"),
        ("/v1/embeddings", {"model": "embed-only", "input": [1, "a"]}, "input"),
        ("/v1/embeddings", {"model": "embed-only", "input": "x", "encoding_format": "hex"}, "encoding_format"),
        ("/v1/images/generations", {"model": "image-model"}, "prompt"),
        ("/v1/images/generations", {"model": "image-model", "prompt": 5}, "prompt"),
        (
            "/v1/images/generations",
            {"model": "image-model", "prompt": "x", "response_format": "gif"},
            "response_format",
        ),
        ("/v1/audio/speech", {"model": "tts-model", "voice": "alloy"}, "input"),
        ("/v1/audio/speech", {"model": "tts-model", "input": "x"}, "voice"),
        (
            "/v1/audio/speech",
            {"model": "tts-model", "input": "x", "voice": "a", "response_format": "ogg"},
            "response_format",
        ),
        ("/v1/responses", {"model": "responses-model"}, "input"),
        ("/v1/responses", {"input": "x"}, "model"),
    ],
)
def test_malformed_input_is_a_400_naming_the_field(gateway, path, body, param):
    response = httpx.post(gateway.url + path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and param in error["message"]


@pytest.mark.parametrize(
    ("data", "files", "param"),
    [
        ({"model": "stt-model"}, {"language": (None, "en")}, "file"),
        ({"model": "stt-model"}, {"file": ("empty.wav", b"")}, "file"),
        ({"model": "stt-model", "response_format": "mp3"}, {"file": ("a.wav", b"RIFF")}, "response_format"),
        ({}, {"file": ("a.wav", b"RIFF")}, "model"),
    ],
)
def test_malformed_uploads_are_a_400_naming_the_field(gateway, data, files, param):
    response = httpx.post(f"{gateway.url}/v1/audio/transcriptions", data=data, files=files)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_a_transcription_that_is_not_multipart_is_a_400(gateway):
    response = httpx.post(f"{gateway.url}/v1/audio/transcriptions", json={"model": "stt-model"})
    assert response.status_code == 400


def test_upstream_errors_map_the_same_for_every_operation(client, fake_azure):
    model = "rate-limited-everything"
    calls = [
        lambda: client.embeddings.create(model=model, input="x"),
        lambda: client.images.generate(model=model, prompt="x"),
        lambda: client.audio.speech.create(model=model, voice="alloy", input="x"),
        lambda: client.audio.transcriptions.create(model=model, file=("a.wav", wav_bytes())),
        lambda: client.responses.create(model=model, input="x"),
    ]
    for call in calls:
        reached = len(fake_azure.requests_for("rate-limited"))
        with pytest.raises(openai.RateLimitError) as caught:
            call()
        assert caught.value.response.headers["retry-after"] == "7"
        assert "exceeded token rate limit" in caught.value.message  # the provider's answer, not a local one
        assert len(fake_azure.requests_for("rate-limited")) > reached
