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


def test_every_model_type_has_a_litellm_name():
    for model_type in ModelType:
        provider = "Azure" if model_type.value.startswith("Azure") else "Google"
        parameters = {"endpoint": "https://e"} if provider == "Azure" else {"gcp_project": "p"}
        model = LLMModel.from_document(
            document(provider=provider, model_type=model_type.value, code="some-model", parameters=parameters)
        )
        assert "some-model" in model.litellm_model
