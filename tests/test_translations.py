"""`/v1/audio/translations` (catalog operation `audio_translation`) on Azure
OpenAI whisper deployments: every response format, the Azure paths, errors."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai.types.audio import Translation, TranslationVerbose

from tests.conftest import API_VERSION, UPSTREAM_KEYS
from tests.openapi import assert_conforms
from tests.support import wav_bytes


def test_a_translation_as_json_and_verbose_json(client, fake_azure):
    audio = wav_bytes()
    result = client.audio.translations.create(
        model="translator", file=("clip.wav", audio), prompt="names", temperature=0.3
    )
    Translation.model_validate(result.to_dict())
    assert_conforms("CreateTranslationResponseJson", result.to_dict())
    assert result.text == f"transcribed {len(audio)} bytes"
    (upstream,) = fake_azure.requests
    assert upstream.path == "/openai/deployments/dep-a/audio/translations"
    assert upstream.query["api-version"] == API_VERSION
    assert upstream.headers["api-key"] == UPSTREAM_KEYS["dep-a"]
    form = upstream.extra["form"]
    assert form["file"] == ("clip.wav", audio)
    assert (form["prompt"], float(form["temperature"])) == ("names", 0.3)
    assert "model" in form and "language" not in form

    verbose = client.audio.translations.create(
        model="translator", file=("clip.wav", audio), response_format="verbose_json"
    )
    assert_conforms("CreateTranslationResponseVerboseJson", verbose.to_dict())
    TranslationVerbose.model_validate(verbose.to_dict())
    assert (verbose.language, verbose.duration) == ("english", 0.2)
    assert verbose.segments[0].text == result.text


@pytest.mark.parametrize(("text_format", "begins"), [("text", "transcribed"), ("srt", "1\n"), ("vtt", "WEBVTT")])
def test_text_formats_come_back_as_text(client, gateway, text_format, begins):
    text = client.audio.translations.create(
        model="translator", file=("a.wav", wav_bytes()), response_format=text_format
    )
    assert isinstance(text, str) and text.startswith(begins)
    raw = httpx.post(
        f"{gateway.url}/v1/audio/translations",
        data={"model": "translator", "response_format": text_format},
        files={"file": ("a.wav", wav_bytes(), "audio/wav")},
    )
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/plain")
    assert raw.text.startswith(begins)


def test_a_translation_is_metered(gateway):
    gateway.client("local", "translation-1").audio.translations.create(model="translator", file=("a.wav", wav_bytes()))
    record = gateway.usage_record("translation-1")
    assert (record["model"], record["operation"], record["status"]) == ("translator", "audio_translation", 200)


def test_the_azure_deployment_and_v1_paths(gateway, fake_azure):
    audio = wav_bytes()
    azure = openai.AzureOpenAI(azure_endpoint=gateway.url, api_version="2024-10-21", api_key="k", max_retries=0)
    assert azure.audio.translations.create(model="translator", file=("a.wav", audio)).text.startswith("transcribed")
    v1 = openai.OpenAI(base_url=f"{gateway.url}/openai/v1", api_key="k", max_retries=0)
    assert v1.audio.translations.create(model="translator", file=("a.wav", audio)).text.startswith("transcribed")
    assert [request.path for request in fake_azure.requests] == ["/openai/deployments/dep-a/audio/translations"] * 2


@pytest.mark.parametrize(
    ("data", "files", "param"),
    [
        ({"model": "translator"}, {"prompt": (None, "x")}, "file"),
        ({"model": "translator"}, {"file": ("empty.wav", b"")}, "file"),
        ({"model": "translator", "response_format": "mp3"}, {"file": ("a.wav", b"RIFF")}, "response_format"),
        ({"model": "translator", "temperature": "warm"}, {"file": ("a.wav", b"RIFF")}, "temperature"),
        ({}, {"file": ("a.wav", b"RIFF")}, "model"),
    ],
)
def test_malformed_uploads_are_a_400_naming_the_field(gateway, fake_azure, data, files, param):
    response = httpx.post(f"{gateway.url}/v1/audio/translations", data=data, files=files)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert fake_azure.requests == []


def test_the_catalog_operation_is_enforced(gateway, fake_azure):
    response = httpx.post(
        f"{gateway.url}/v1/audio/translations", data={"model": "stt-model"}, files={"file": ("a.wav", wav_bytes())}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unsupported_operation" and "audio_translation" in error["message"]
    assert fake_azure.requests == []


def test_provider_errors_are_mapped(client, gateway, fake_azure):
    with pytest.raises(openai.RateLimitError) as caught:
        client.audio.translations.create(model="rate-limited-everything", file=("a.wav", wav_bytes()))
    assert caught.value.response.headers["retry-after"] == "7"
    assert "exceeded token rate limit" in caught.value.message
    assert fake_azure.requests_for("rate-limited")[0].path == "/openai/deployments/rate-limited/audio/translations"
    with pytest.raises(openai.APIStatusError) as refused:
        client.audio.translations.create(model="wrong-key-translator", file=("a.wav", wav_bytes()))
    assert (refused.value.status_code, refused.value.code) == (502, "upstream_error")
    assert UPSTREAM_KEYS["dep-b"] not in refused.value.response.text
    assert fake_azure.requests[-1].headers["api-key"] == UPSTREAM_KEYS["dep-b"]
    assert UPSTREAM_KEYS["dep-b"] not in gateway.log()
