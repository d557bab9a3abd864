"""Vertex AI speech (Cloud Text-to-Speech through LiteLLM, Gemini speech sent by
the gateway) and transcription (Speech-to-Text v2, Gemini transcription) through
LiteLLM, against the fake Google APIs."""

from __future__ import annotations

import base64
import io
import wave

import httpx
import openai
import pytest

from shared.domain import InvalidCatalogEntry, LLMModel
from tests.conftest import ACCOUNT_ONE, ACCOUNT_TWO
from tests.fakes.vertex import fake_audio, gemini_speech_pcm
from tests.openapi import assert_conforms
from tests.support import wav_bytes

#: OpenAI's format, Google's encoding for it, and the content type the caller gets.
SPEECH = [("mp3", "MP3", "audio/mpeg"), ("opus", "OGG_OPUS", "audio/ogg"), ("wav", "LINEAR16", "audio/wav")]


def private_keys(gateway) -> list[str]:
    return [account["private_key"] for account in gateway.accounts.values()]


def assert_no_credential_in(text: str, gateway) -> None:
    for key in private_keys(gateway):
        assert key not in text
        assert key.splitlines()[1] not in text  # not even one line of it


# Speech


@pytest.mark.parametrize(("audio_format", "encoding", "content_type"), SPEECH)
def test_cloud_text_to_speech_in_each_format(
    vertex_client, google, vertex_gateway, audio_format, encoding, content_type
):
    speech = vertex_client.audio.speech.create(
        model="cloud-tts", voice="alloy", input="say this", response_format=audio_format, speed=1.25
    )
    assert speech.content == fake_audio(encoding, "say this")
    assert speech.response.headers["content-type"] == content_type
    (upstream,) = google[1].requests
    assert (upstream.method, upstream.path) == ("POST", "/v1/text:synthesize")
    assert upstream.extra["account"] == ACCOUNT_ONE  # the bearer token is the model's service account's
    assert upstream.headers["x-goog-user-project"] == "proj-one"
    sent = upstream.json
    assert sent["input"] == {"text": "say this"}
    assert sent["voice"]["languageCode"] == "en-US" and sent["voice"]["name"]
    assert sent["audioConfig"]["audioEncoding"] == encoding
    assert float(sent["audioConfig"]["speakingRate"]) == 1.25
    assert_no_credential_in(upstream.body.decode(), vertex_gateway)


def test_speech_without_a_format_is_mp3_as_on_openai(vertex_client, google):
    with vertex_client.audio.speech.with_streaming_response.create(
        model="cloud-tts", voice="alloy", input="hi"
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        assert b"".join(response.iter_bytes()) == fake_audio("MP3", "hi")
    assert google[1].requests[0].json["audioConfig"]["audioEncoding"] == "MP3"


def test_a_google_voice_name_is_sent_as_it_is(vertex_client, google):
    vertex_client.audio.speech.create(model="cloud-tts", voice="en-GB-Chirp3-HD-Charon", input="hello")
    assert google[1].requests[0].json["voice"] == {"languageCode": "en-GB", "name": "en-GB-Chirp3-HD-Charon"}


@pytest.mark.parametrize("audio_format", ["aac", "flac", "pcm"])
def test_formats_cloud_text_to_speech_does_not_answer_are_a_400(vertex_gateway, google, audio_format):
    google[1].clear()
    response = httpx.post(
        f"{vertex_gateway.url}/v1/audio/speech",
        json={"model": "cloud-tts", "voice": "alloy", "input": "x", "response_format": audio_format},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "response_format"
    assert google[1].requests == []


@pytest.mark.parametrize(
    ("extra", "param"), [({"instructions": "calm"}, "instructions"), ({"voice": {"id": "voice_1"}}, "voice")]
)
def test_speech_fields_google_does_not_take_are_a_400(vertex_gateway, google, extra, param):
    google[1].clear()
    body = {"model": "cloud-tts", "voice": "alloy", "input": "x"} | extra
    response = httpx.post(f"{vertex_gateway.url}/v1/audio/speech", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert google[1].requests == []


def test_speech_is_metered_and_refusals_are_mapped(vertex_client, vertex_gateway, google):
    vertex_gateway.client("local", "vertex-tts-1").audio.speech.create(model="cloud-tts", voice="alloy", input="x")
    record = vertex_gateway.usage_record("vertex-tts-1")
    assert (record["model"], record["operation"], record["status"]) == ("cloud-tts", "audio_tts", 200)

    with pytest.raises(openai.RateLimitError):  # the fake faults on a voice named after the fault
        vertex_client.audio.speech.create(model="cloud-tts", voice="en-US-rate-limited", input="x")
    with pytest.raises(openai.APIStatusError) as forbidden:
        vertex_client.audio.speech.create(model="cloud-tts", voice="en-US-forbidden", input="x")
    assert (forbidden.value.status_code, forbidden.value.code) == (502, "upstream_error")
    assert_no_credential_in(forbidden.value.response.text, vertex_gateway)
    assert_no_credential_in(vertex_gateway.log(), vertex_gateway)


# Gemini speech


def test_gemini_speech_as_a_wav_file(vertex_client, google, vertex_gateway):
    speech = vertex_client.audio.speech.create(
        model="gemini-tts", voice="alloy", input="good morning", response_format="wav"
    )
    assert speech.response.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(speech.content)) as audio:
        assert (audio.getnchannels(), audio.getsampwidth(), audio.getframerate()) == (1, 2, 24000)
        assert audio.readframes(audio.getnframes()) == gemini_speech_pcm("Kore", "good morning")
    (upstream,) = google[1].requests
    assert (upstream.method, upstream.path) == (
        "POST",
        "/v1/projects/proj-one/locations/us-central1/publishers/google/models/"
        "gemini-2.5-flash-preview-tts:generateContent",
    )
    assert upstream.extra["account"] == ACCOUNT_TWO  # the bearer token is the model's service account's
    sent = upstream.json
    assert sent["contents"] == [{"role": "user", "parts": [{"text": "good morning"}]}]
    assert sent["generationConfig"]["responseModalities"] == ["AUDIO"]
    voice = sent["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"]
    assert voice == "Kore"  # OpenAI's alloy, as LiteLLM maps it
    assert_no_credential_in(upstream.body.decode(), vertex_gateway)


def test_gemini_speech_as_pcm_in_a_gemini_voice_with_instructions(vertex_client, google):
    speech = vertex_client.audio.speech.create(
        model="gemini-tts", voice="Puck", input="have a nice day", instructions="Say cheerfully", response_format="pcm"
    )
    assert speech.response.headers["content-type"] == "audio/pcm"
    assert speech.content == gemini_speech_pcm("Puck", "Say cheerfully: have a nice day")
    sent = google[1].requests[0].json
    assert sent["contents"][0]["parts"] == [{"text": "Say cheerfully: have a nice day"}]


def test_gemini_speech_reuses_the_cached_google_token(vertex_client, google):
    oauth = google[0]
    vertex_client.audio.speech.create(model="gemini-tts", voice="alloy", input="warm up", response_format="pcm")
    before = oauth.tokens_issued.get(ACCOUNT_TWO, 0)
    for _ in range(3):
        vertex_client.audio.speech.create(model="gemini-tts", voice="alloy", input="again", response_format="pcm")
    assert oauth.tokens_issued.get(ACCOUNT_TWO, 0) == before  # not one token fetch per call, as LiteLLM's speech does


def test_gemini_speech_is_metered_in_tokens_at_the_model_costs(vertex_gateway, google):
    google[1].clear()
    client = vertex_gateway.client("local", "vertex-gemini-tts-1")
    speech = client.audio.speech.create(model="gemini-tts", voice="alloy", input="one two three", response_format="pcm")
    record = vertex_gateway.usage_record("vertex-gemini-tts-1")
    samples = len(speech.content) // 2  # the fake counts a token per sample
    assert (record["model"], record["operation"], record["status"]) == ("gemini-tts", "audio_tts", 200)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (3, samples)
    assert record["cost"] == pytest.approx((3 * 0.001 + samples * 0.002) / 1000)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({}, "response_format"),  # OpenAI's default is mp3, which Gemini does not make
        ({"response_format": "mp3"}, "response_format"),
        ({"response_format": "opus"}, "response_format"),
        ({"response_format": "wav", "speed": 1.5}, "speed"),
        ({"response_format": "wav", "voice": {"id": "voice_1"}}, "voice"),
        ({"response_format": "wav", "stream_format": "sse"}, "stream_format"),
    ],
)
def test_what_gemini_speech_does_not_take_is_a_400_naming_the_field(vertex_gateway, google, extra, param):
    google[1].clear()
    body = {"model": "gemini-tts", "voice": "alloy", "input": "x"} | extra
    response = httpx.post(f"{vertex_gateway.url}/v1/audio/speech", json=body)
    assert response.status_code == 400, response.text
    assert_conforms("ErrorResponse", response.json())
    assert response.json()["error"]["param"] == param
    assert param != "response_format" or "wav" in response.json()["error"]["message"]  # what it takes
    assert google[1].requests == []


@pytest.mark.parametrize(
    ("model", "error", "status"),
    [
        ("gemini-tts-rate-limited", openai.RateLimitError, 429),
        ("gemini-tts-invalid", openai.BadRequestError, 400),
        ("gemini-tts-forbidden", openai.APIStatusError, 502),
        ("gemini-tts-broken", openai.APIStatusError, 502),
    ],
)
def test_gemini_speech_refusals_are_mapped(vertex_client, vertex_gateway, model, error, status):
    with pytest.raises(error) as caught:
        vertex_client.audio.speech.create(model=model, voice="alloy", input="x", response_format="wav")
    assert caught.value.status_code == status
    assert_conforms("ErrorResponse", caught.value.response.json())
    assert_no_credential_in(caught.value.response.text, vertex_gateway)
    assert_no_credential_in(vertex_gateway.log(), vertex_gateway)


@pytest.mark.parametrize("model", ["gemini-tts-blocked", "gemini-tts-unsafe"])
def test_speech_googles_safety_filters_block_is_a_400_not_a_server_error(vertex_client, model):
    with pytest.raises(openai.BadRequestError) as caught:
        vertex_client.audio.speech.create(model=model, voice="alloy", input="x", response_format="wav")
    assert caught.value.code == "content_filter"
    assert_conforms("ErrorResponse", caught.value.response.json())


def test_a_voice_gemini_does_not_have_is_googles_400(vertex_client):
    with pytest.raises(openai.BadRequestError) as caught:
        vertex_client.audio.speech.create(model="gemini-tts", voice="nobody", input="x", response_format="wav")
    assert "nobody" in caught.value.message


# Transcription


def test_speech_to_text_v2_as_json_and_text(vertex_client, google, vertex_gateway):
    audio = wav_bytes()
    result = vertex_client.audio.transcriptions.create(model="chirp-stt", file=("clip.wav", audio), language="en")
    assert_conforms("CreateTranscriptionResponseJson", result.to_dict())
    assert result.text == f"transcribed {len(audio)} bytes"
    (upstream,) = google[1].requests
    assert upstream.path == "/v2/projects/proj-one/locations/us-central1/recognizers/_:recognize"
    assert upstream.extra["account"] == ACCOUNT_TWO
    config = upstream.json["config"]
    assert (config["model"], config["languageCodes"]) == ("chirp_2", ["en-US"])
    assert base64.b64decode(upstream.json["content"]) == audio
    assert_no_credential_in(upstream.body.decode(), vertex_gateway)

    text = vertex_client.audio.transcriptions.create(
        model="chirp-stt", file=("clip.wav", audio), response_format="text"
    )
    assert text == f"transcribed {len(audio)} bytes"


def test_gemini_transcription_is_metered_in_tokens(vertex_gateway, google):
    google[1].clear()
    audio = wav_bytes()
    vertex_client = vertex_gateway.client("local", "vertex-stt-gemini")
    result = vertex_client.audio.transcriptions.create(model="gemini-stt", file=("clip.wav", audio))
    assert_conforms("CreateTranscriptionResponseJson", result.to_dict())
    assert result.text == f"transcribed {len(audio)} bytes"
    (upstream,) = google[1].requests
    assert upstream.path.endswith("/publishers/google/models/gemini-3.5-transcribe:generateContent")
    (part,) = upstream.json["contents"][0]["parts"]
    assert part["inlineData"]["mimeType"] == "audio/wav"
    assert base64.b64decode(part["inlineData"]["data"]) == audio
    record = vertex_gateway.usage_record("vertex-stt-gemini")
    assert (record["operation"], record["prompt_tokens"], record["completion_tokens"]) == ("audio_stt", 1, 3)


@pytest.mark.parametrize("text_format", ["verbose_json", "srt", "vtt"])
def test_transcript_formats_google_does_not_answer_are_a_400(vertex_gateway, google, text_format):
    google[1].clear()
    response = httpx.post(
        f"{vertex_gateway.url}/v1/audio/transcriptions",
        data={"model": "chirp-stt", "response_format": text_format},
        files={"file": ("a.wav", wav_bytes(), "audio/wav")},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "response_format"
    assert google[1].requests == []


@pytest.mark.parametrize(("field", "value"), [("prompt", "names"), ("temperature", "0.2")])
def test_transcription_fields_google_does_not_take_are_a_400(vertex_gateway, google, field, value):
    google[1].clear()
    response = httpx.post(
        f"{vertex_gateway.url}/v1/audio/transcriptions",
        data={"model": "gemini-stt", field: value},
        files={"file": ("a.wav", wav_bytes(), "audio/wav")},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == field
    assert google[1].requests == []


def test_transcription_refusals_are_mapped(vertex_client, vertex_gateway):
    with pytest.raises(openai.RateLimitError):
        vertex_client.audio.transcriptions.create(model="stt-rate-limited", file=("a.wav", wav_bytes()))
    with pytest.raises(openai.APIStatusError) as forbidden:
        vertex_client.audio.transcriptions.create(model="stt-forbidden", file=("a.wav", wav_bytes()))
    assert (forbidden.value.status_code, forbidden.value.code) == (502, "upstream_error")
    assert_no_credential_in(forbidden.value.response.text, vertex_gateway)


# What the catalog takes


def vertex_document(code, operations, **parameters):
    return {
        "id": "m",
        "provider": "Google",
        "model_type": "GoogleVertex",
        "code": code,
        "parameters": {"gcp_project": "p"} | parameters,
        "operations": operations,
    }


def test_the_catalog_takes_the_speech_models_the_gateway_serves():
    synthesize = "https://texttospeech.googleapis.com/v1/text:synthesize"
    assert LLMModel.from_document(vertex_document("chirp", ["audio_tts"], api_base=synthesize)).operations
    assert LLMModel.from_document(vertex_document("chirp", ["audio_tts"]))
    assert LLMModel.from_document(vertex_document("chirp_3", ["audio_stt"], api_base="https://speech.example"))
    assert LLMModel.from_document(vertex_document("gemini-3.5-transcribe", ["audio_stt"]))
    assert LLMModel.from_document(vertex_document("gemini-2.5-flash-tts", ["audio_tts"], api_base="https://vx.example"))


@pytest.mark.parametrize(
    ("code", "operations", "parameters", "field"),
    [
        ("gemini-2.5-flash", ["audio_tts"], {}, "operations"),
        (
            "gemini-2.5-flash-tts",
            ["audio_tts"],
            {"api_base": "https://tts.example/v1/text:synthesize"},
            "parameters.api_base",
        ),
        ("gemini-2.0-flash", ["audio_stt"], {}, "operations"),
        ("chirp", ["audio_tts"], {"api_base": "https://tts.example"}, "parameters.api_base"),
        (
            "chirp",
            ["audio_tts", "audio_stt"],
            {"api_base": "https://tts.example/v1/text:synthesize"},
            "parameters.api_base",
        ),
    ],
)
def test_speech_models_the_gateway_cannot_serve_are_refused(code, operations, parameters, field):
    with pytest.raises(InvalidCatalogEntry) as caught:
        LLMModel.from_document(vertex_document(code, operations, **parameters))
    assert caught.value.field_name == field
