"""The catalog entry: parsing, access rules, cost and LiteLLM naming."""

import pytest

from shared.domain import InvalidCatalogEntry, LLMModel, ModelType, Operation


def document(**overrides):
    base = {
        "id": "gpt-4o",
        "name": "GPT-4o",
        "provider": "Azure",
        "model_type": "AzureOpenAI",
        "code": "gpt-4o-prod",
        "parameters": {"endpoint": "https://res.openai.azure.com", "api_key": "$KEY"},
        "costs": {"input": 0.0025, "output": 0.01},
        "operations": ["ChatCompletion", "Responses"],
        "projects": ["team-a"],
        "private": False,
    }
    return base | overrides


def test_a_seed_document_becomes_an_entry_with_its_behaviour():
    model = LLMModel.from_document(document())
    assert model.supports_operation(Operation.CHAT_COMPLETION)
    assert not model.supports_operation(Operation.EMBEDDINGS)
    assert model.litellm_model == "azure/gpt-4o-prod"
    assert model.calculate_cost(1000, 500) == pytest.approx(0.0025 + 0.005)


def test_private_models_are_available_only_to_their_projects():
    model = LLMModel.from_document(document(private=True))
    assert model.is_available_for_project("team-a")
    assert not model.is_available_for_project("team-b")
    assert not model.is_available_for_project(None)
    assert LLMModel.from_document(document()).is_available_for_project("team-b")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"id": ""}, "id"),
        ({"code": None}, "code"),
        ({"provider": "AWS"}, "provider"),
        ({"model_type": "Bedrock"}, "model_type"),
        ({"model_type": "GoogleVertex"}, "model_type"),
        ({"operations": ["chat"]}, "operations"),
        ({"operations": "ChatCompletion"}, "operations"),
        ({"costs": {"input": -1}}, "costs"),
        ({"costs": {"input": "cheap"}}, "costs"),
        ({"private": "yes"}, "private"),
        ({"parameters": []}, "parameters"),
        ({"created": "yesterday"}, "created"),
        ({"parameters": {"api_key": "$KEY"}}, "parameters.endpoint"),
        ({"provider": "Google", "model_type": "GoogleVertex", "parameters": {}}, "parameters.gcp_project"),
    ],
)
def test_a_bad_document_is_refused_naming_the_field(overrides, field):
    with pytest.raises(InvalidCatalogEntry) as caught:
        LLMModel.from_document(document(**overrides))
    assert caught.value.field_name == field
    assert f"'{field}'" in str(caught.value)


@pytest.mark.parametrize(
    ("model_type", "code", "litellm_model"),
    [
        ("AzureOpenAI", "gpt-4o-prod", "azure/gpt-4o-prod"),
        ("AzureFoundry", "Phi-4", "azure_ai/Phi-4"),
        ("GoogleVertex", "gemini-2.0-flash", "vertex_ai/gemini-2.0-flash"),
        ("GoogleVertexClaude", "claude-3-5-sonnet-v2@20241022", "vertex_ai/claude-3-5-sonnet-v2@20241022"),
        ("GoogleVertexMeta", "meta/llama-3.3-70b-instruct-maas", "vertex_ai/meta/llama-3.3-70b-instruct-maas"),
        ("GoogleVertexMistral", "mistral-large@2407", "vertex_ai/mistral-large@2407"),
        ("GoogleVertexJamba", "jamba-1.5-large@001", "vertex_ai/jamba-1.5-large@001"),
        ("GoogleVertexDeepSeek", "deepseek-ai/deepseek-r1-0528-maas", "vertex_ai/deepseek-ai/deepseek-r1-0528-maas"),
        (
            "GoogleVertexQwen",
            "qwen/qwen3-coder-480b-a35b-instruct-maas",
            "vertex_ai/qwen/qwen3-coder-480b-a35b-instruct-maas",
        ),
        ("GoogleVertexOpenAI", "openai/gpt-oss-120b-maas", "vertex_ai/openai/gpt-oss-120b-maas"),
    ],
)
def test_each_model_type_maps_to_the_litellm_route_of_its_family(model_type, code, litellm_model):
    provider = "Azure" if model_type.startswith("Azure") else "Google"
    parameters = {"endpoint": "https://e"} if provider == "Azure" else {"gcp_project": "p"}
    model = LLMModel.from_document(
        document(
            provider=provider, model_type=model_type, code=code, parameters=parameters, operations=["ChatCompletion"]
        )
    )
    assert model.litellm_model == litellm_model


def test_every_model_type_is_covered_by_the_table():
    from shared.domain import LITELLM_MODEL_FORMAT

    assert set(LITELLM_MODEL_FORMAT) == set(ModelType)


@pytest.mark.parametrize(
    ("model_type", "code", "operations", "field"),
    [
        ("GoogleVertexClaude", "anthropic/claude-3-5-sonnet", ["ChatCompletion"], "code"),
        ("GoogleVertexMeta", "llama-3.3-70b-instruct-maas", ["ChatCompletion"], "code"),
        ("GoogleVertexOpenAI", "gpt-oss-120b-maas", ["ChatCompletion"], "code"),
        ("GoogleVertex", "gemini-2.0-flash", ["audio_tts"], "operations"),
        ("GoogleVertex", "gemini-2.0-flash", ["audio_stt"], "operations"),
        ("GoogleVertexClaude", "claude-3-5-sonnet-v2@20241022", ["embeddings"], "operations"),
    ],
)
def test_vertex_combinations_litellm_cannot_serve_are_refused(model_type, code, operations, field):
    with pytest.raises(InvalidCatalogEntry) as caught:
        LLMModel.from_document(
            document(
                provider="Google",
                model_type=model_type,
                code=code,
                operations=operations,
                parameters={"gcp_project": "p"},
            )
        )
    assert caught.value.field_name == field


def foundry_document(code, operations):
    return document(
        model_type="AzureFoundry",
        code=code,
        operations=operations,
        parameters={"endpoint": "https://r.services.ai.azure.com"},
    )


def test_a_foundry_model_serves_chat_and_embeddings():
    entry = LLMModel.from_document(foundry_document("DeepSeek-V3-0324", ["ChatCompletion", "embeddings"]))
    assert entry.operations == (Operation.CHAT_COMPLETION, Operation.EMBEDDINGS)


@pytest.mark.parametrize(
    ("code", "operations", "field"),
    [
        ("Phi-4", ["Completion"], "operations"),
        ("Phi-4", ["images"], "operations"),
        ("Phi-4", ["audio_stt"], "operations"),
        # LiteLLM sends these to Foundry's Anthropic API, agents and model router, not the model inference API.
        ("claude-sonnet-4-5", ["ChatCompletion"], "code"),
        ("agents/asst_1", ["ChatCompletion"], "code"),
        ("model-router", ["ChatCompletion"], "code"),
    ],
)
def test_foundry_combinations_the_gateway_does_not_serve_are_refused(code, operations, field):
    with pytest.raises(InvalidCatalogEntry) as caught:
        LLMModel.from_document(foundry_document(code, operations))
    assert caught.value.field_name == field


def mock_document(**overrides):
    return document(**({"provider": "Mock", "model_type": "Mock", "code": "mock", "parameters": {}} | overrides))


def test_a_mock_model_needs_no_parameters_and_serves_what_the_mock_answers():
    model = LLMModel.from_document(mock_document(operations=["ChatCompletion", "Responses", "embeddings"]))
    assert model.litellm_model == "openai/mock"
    assert model.supports_operation(Operation.EMBEDDINGS)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"operations": ["images"]}, "operations"),
        ({"operations": ["audio_tts"]}, "operations"),
        ({"parameters": {"response": 42}}, "parameters.response"),
        ({"parameters": {"dimensions": 0}}, "parameters.dimensions"),
        ({"parameters": {"dimensions": "8"}}, "parameters.dimensions"),
        ({"parameters": {"tool_call": True}}, "parameters.tool_call"),
        ({"parameters": {"tool_call": {"name": 3}}}, "parameters.tool_call.name"),
        ({"parameters": {"tool_call": {"arguments": "{}"}}}, "parameters.tool_call.arguments"),
        ({"provider": "Azure"}, "model_type"),
    ],
)
def test_a_bad_mock_document_is_refused_naming_the_field(overrides, field):
    with pytest.raises(InvalidCatalogEntry) as caught:
        LLMModel.from_document(mock_document(**overrides))
    assert caught.value.field_name == field
