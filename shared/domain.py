"""The model catalog entry and the operations it offers. Pure Python, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .quota import Scope


class Provider(str, Enum):
    AZURE = "Azure"
    GOOGLE = "Google"
    #: No provider: the gateway answers (for trying the gateway, and callers' tests: `providers/mock.py`).
    MOCK = "Mock"


class ModelType(str, Enum):
    AZURE_OPENAI = "AzureOpenAI"
    AZURE_FOUNDRY = "AzureFoundry"
    GOOGLE_VERTEX = "GoogleVertex"
    GOOGLE_VERTEX_CLAUDE = "GoogleVertexClaude"
    GOOGLE_VERTEX_DEEPSEEK = "GoogleVertexDeepSeek"
    GOOGLE_VERTEX_META = "GoogleVertexMeta"
    GOOGLE_VERTEX_MISTRAL = "GoogleVertexMistral"
    GOOGLE_VERTEX_JAMBA = "GoogleVertexJamba"
    GOOGLE_VERTEX_QWEN = "GoogleVertexQwen"
    GOOGLE_VERTEX_OPENAI = "GoogleVertexOpenAI"
    MOCK = "Mock"


class Operation(str, Enum):
    RESPONSES = "Responses"
    CHAT_COMPLETION = "ChatCompletion"
    #: The legacy `/v1/completions` (a prompt, not messages).
    COMPLETION = "Completion"
    EMBEDDINGS = "embeddings"
    IMAGES = "images"
    AUDIO_TTS = "audio_tts"
    AUDIO_STT = "audio_stt"
    #: `/v1/audio/translations`: speech in any language as English text.
    AUDIO_TRANSLATION = "audio_translation"
    AUDIO_REALTIME = "audio_realtime"


PROVIDER_OF_TYPE: dict[ModelType, Provider] = {
    model_type: Provider.AZURE if model_type.value.startswith("Azure") else Provider.GOOGLE for model_type in ModelType
} | {ModelType.MOCK: Provider.MOCK}

#: LiteLLM's model string for each catalog model type, given the entry's
#: `code` (Azure deployment name or Vertex model id). The one table for it.
LITELLM_MODEL_FORMAT: dict[ModelType, str] = {
    ModelType.AZURE_OPENAI: "azure/{code}",
    ModelType.AZURE_FOUNDRY: "azure_ai/{code}",
    ModelType.GOOGLE_VERTEX: "vertex_ai/{code}",
    ModelType.GOOGLE_VERTEX_CLAUDE: "vertex_ai/{code}",
    ModelType.GOOGLE_VERTEX_DEEPSEEK: "vertex_ai/{code}",
    ModelType.GOOGLE_VERTEX_META: "vertex_ai/{code}",
    ModelType.GOOGLE_VERTEX_MISTRAL: "vertex_ai/{code}",
    ModelType.GOOGLE_VERTEX_JAMBA: "vertex_ai/{code}",
    ModelType.GOOGLE_VERTEX_QWEN: "vertex_ai/{code}",
    ModelType.GOOGLE_VERTEX_OPENAI: "vertex_ai/{code}",
    # LiteLLM never sees a Mock model (the gateway answers it); the prefix keeps the table whole.
    ModelType.MOCK: "openai/{code}",
}
#: LiteLLM's model string for a legacy completion, where it is not the table's
#: above: `azure/` would send the prompt to Azure's chat completions.
LITELLM_COMPLETION_MODEL_FORMAT: dict[ModelType, str] = {ModelType.AZURE_OPENAI: "azure_text/{code}"}


@dataclass(frozen=True)
class Caller:
    """Who is calling: a project, or nobody in particular when anonymous use is allowed."""

    project: str | None = None
    #: May use the admin API (the project document says `"admin": true`).
    admin: bool = False
    #: The budgets and rate limits that apply (`shared.quota.Scope`): the project's, then the key's.
    limits: tuple[Scope, ...] = ()


#: How a Vertex model id (`code`) must begin for LiteLLM to route it to its family.
VERTEX_CODE_PREFIXES: dict[ModelType, tuple[str, ...]] = {
    ModelType.GOOGLE_VERTEX_CLAUDE: ("claude-",),
    ModelType.GOOGLE_VERTEX_META: ("meta/",),
    ModelType.GOOGLE_VERTEX_MISTRAL: ("mistral", "codestral"),
    ModelType.GOOGLE_VERTEX_JAMBA: ("jamba",),
    ModelType.GOOGLE_VERTEX_DEEPSEEK: ("deepseek-ai/",),
    ModelType.GOOGLE_VERTEX_QWEN: ("qwen/",),
    ModelType.GOOGLE_VERTEX_OPENAI: ("openai/gpt-oss-",),
}

#: Operations the gateway can serve per Google model type. Speech is Cloud
#: Text-to-Speech (through LiteLLM) or Gemini speech (`providers/vertex_chat.py`),
#: transcription Speech-to-Text v2 or Gemini transcription (through LiteLLM), on
#: `GoogleVertex` models (see `_check_vertex_audio` for the codes and `api_base`
#: each takes); the Responses API is served over each model's chat completions
#: (`providers/responses_chat.py`). A legacy completion is LiteLLM's: the prompt
#: as a chat message, the answer as a `text_completion`.
GOOGLE_OPERATIONS: dict[ModelType, frozenset[Operation]] = {
    model_type: frozenset({Operation.CHAT_COMPLETION, Operation.COMPLETION, Operation.RESPONSES})
    for model_type in VERTEX_CODE_PREFIXES
} | {
    ModelType.GOOGLE_VERTEX: frozenset(
        {
            Operation.CHAT_COMPLETION,
            Operation.COMPLETION,
            Operation.RESPONSES,
            Operation.EMBEDDINGS,
            Operation.IMAGES,
            Operation.AUDIO_TTS,
            Operation.AUDIO_STT,
        }
    )
}
#: How a Cloud Text-to-Speech model's `api_base` ends: LiteLLM sends speech to it as it is.
CLOUD_TTS_PATH = "/v1/text:synthesize"


def gemini_speech(code: str) -> bool:
    """Whether a Vertex `code` names a Gemini text-to-speech model (`gemini-2.5-flash-tts`,
    `gemini-2.5-flash-preview-tts`...): LiteLLM's rule, a code naming both `gemini` and `tts`."""
    lowered = code.lower()
    return "gemini" in lowered and "tts" in lowered


#: What the gateway serves on an Azure AI Foundry deployment (the model inference API's
#: chat completions and embeddings, and the Responses API over its chat completions).
FOUNDRY_OPERATIONS = frozenset({Operation.CHAT_COMPLETION, Operation.RESPONSES, Operation.EMBEDDINGS})
#: Foundry model names LiteLLM sends elsewhere than the model inference API (Claude to
#: Foundry's Anthropic API, agents, the model router): not served.
FOUNDRY_ROUTED_ELSEWHERE = ("claude", "agents/", "model-router", "model_router")

#: What the Mock model answers: chat, the Responses API and legacy completions (whole and streamed) and embeddings.
MOCK_OPERATIONS = frozenset(
    {Operation.CHAT_COMPLETION, Operation.COMPLETION, Operation.RESPONSES, Operation.EMBEDDINGS}
)

#: Parameters each provider needs; any one name of a tuple will do.
REQUIRED_PARAMETERS: dict[Provider, tuple[tuple[str, ...], ...]] = {
    Provider.AZURE: (("endpoint", "api_base"),),
    Provider.GOOGLE: (("gcp_project",),),
    Provider.MOCK: (),
}


class InvalidCatalogEntry(ValueError):
    """A catalog document does not describe a usable model."""

    def __init__(self, model_id: str, field_name: str, problem: str) -> None:
        super().__init__(f"catalog entry '{model_id}': field '{field_name}' {problem}")
        self.model_id = model_id
        self.field_name = field_name


@dataclass(frozen=True)
class Deployment:
    """One place a model is served: a deployment name or model id, and its parameters.

    Lower `priority` numbers are tried first; within a priority, traffic is
    spread by `weight`.
    """

    name: str
    code: str
    parameters: dict[str, Any]
    priority: int = 0
    weight: float = 1.0


@dataclass(frozen=True)
class LLMModel:
    id: str
    name: str
    provider: Provider
    model_type: ModelType
    code: str
    parameters: dict[str, Any] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    operations: tuple[Operation, ...] = ()
    projects: tuple[str, ...] = ()
    private: bool = False
    created: int = 0
    deployments: tuple[Deployment, ...] = ()
    fallbacks: tuple[str, ...] = ()
    #: Completion tokens a call is reserved at against a budget or token limit when the caller sets no cap.
    max_output_tokens: int | None = None

    def supports_operation(self, operation: Operation) -> bool:
        return operation in self.operations

    def is_available_for_project(self, project_id: str | None) -> bool:
        return not self.private or project_id in self.projects

    def calculate_cost(self, input_tokens: int, output_tokens: int) -> float:
        """Cost in USD; `costs` are per 1K tokens."""
        return (input_tokens * self.costs.get("input", 0.0) + output_tokens * self.costs.get("output", 0.0)) / 1000

    @property
    def litellm_model(self) -> str:
        return self.litellm_model_for(self.code)

    def litellm_model_for(self, code: str) -> str:
        return LITELLM_MODEL_FORMAT[self.model_type].format(code=code)

    def litellm_completion_model_for(self, code: str) -> str:
        """LiteLLM's model string for a legacy completion of the deployment `code`."""
        template = LITELLM_COMPLETION_MODEL_FORMAT.get(self.model_type, LITELLM_MODEL_FORMAT[self.model_type])
        return template.format(code=code)

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> LLMModel:
        """Build an entry from a catalog document, naming the first bad field."""
        model_id = document.get("id")
        if not isinstance(model_id, str) or not model_id:
            raise InvalidCatalogEntry(str(model_id), "id", "must be a non-empty string")

        def fail(field_name: str, problem: str) -> InvalidCatalogEntry:
            return InvalidCatalogEntry(model_id, field_name, problem)

        def enum_value(enum: type[Enum], field_name: str, value: Any) -> Any:
            try:
                return enum(value)
            except ValueError:
                allowed = ", ".join(member.value for member in enum)
                raise fail(field_name, f"is {value!r}; expected one of: {allowed}") from None

        def string_list(field_name: str) -> list[Any]:
            value = document.get(field_name, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise fail(field_name, "must be a list of strings")
            return value

        code = document.get("code")
        if not isinstance(code, str) or not code:
            raise fail("code", "must be a non-empty string")
        provider = enum_value(Provider, "provider", document.get("provider"))
        model_type = enum_value(ModelType, "model_type", document.get("model_type"))
        if PROVIDER_OF_TYPE[model_type] is not provider:
            raise fail("model_type", f"{model_type.value} is not a {provider.value} model type")
        parameters = document.get("parameters", {})
        if not isinstance(parameters, dict):
            raise fail("parameters", "must be an object")
        deployments = _deployments(document.get("deployments"), code, parameters, fail)

        def check_deployment(deployment: Deployment, where: str) -> None:
            prefixes = VERTEX_CODE_PREFIXES.get(model_type)
            if prefixes and not deployment.code.startswith(prefixes):
                raise fail(f"{where}code", f"of a {model_type.value} model must start with {' or '.join(prefixes)}")
            if model_type is ModelType.AZURE_FOUNDRY and any(
                name in deployment.code.lower() for name in FOUNDRY_ROUTED_ELSEWHERE
            ):
                raise fail(
                    f"{where}code",
                    f"of an AzureFoundry model must not contain {', '.join(FOUNDRY_ROUTED_ELSEWHERE)} "
                    "(LiteLLM would not call the model inference API)",
                )
            for required in REQUIRED_PARAMETERS[provider]:
                if not any(deployment.parameters.get(name) for name in required):
                    raise fail(f"{where}parameters.{required[0]}", f"is required for {provider.value} models")

        for index, deployment in enumerate(deployments):
            check_deployment(deployment, f"deployments[{index}]." if "deployments" in document else "")
        if provider is Provider.MOCK:
            _check_mock_parameters(parameters, fail)
        fallbacks = string_list("fallbacks")
        if model_id in fallbacks:
            raise fail("fallbacks", "must not name the model itself")
        costs = document.get("costs", {})
        if not isinstance(costs, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in costs.values()
        ):
            raise fail("costs", "must map 'input'/'output' to non-negative numbers")
        private = document.get("private", False)
        if not isinstance(private, bool):
            raise fail("private", "must be true or false")
        created = document.get("created", document.get("_ts", 0))
        if not isinstance(created, int) or isinstance(created, bool):
            raise fail("created", "must be a Unix timestamp (integer)")
        max_output_tokens = document.get("max_output_tokens")
        if max_output_tokens is not None and (
            not isinstance(max_output_tokens, int) or isinstance(max_output_tokens, bool) or max_output_tokens < 1
        ):
            raise fail("max_output_tokens", "must be a whole number, 1 or more")
        name = document.get("name", model_id)
        if not isinstance(name, str):
            raise fail("name", "must be a string")
        operations = tuple(enum_value(Operation, "operations", value) for value in string_list("operations"))
        servable = (
            GOOGLE_OPERATIONS.get(model_type)
            or (FOUNDRY_OPERATIONS if model_type is ModelType.AZURE_FOUNDRY else None)
            or (MOCK_OPERATIONS if provider is Provider.MOCK else None)
        )
        if servable is not None:
            unsupported = [op.value for op in operations if op not in servable]
            if unsupported:
                raise fail(
                    "operations",
                    f"lists {', '.join(unsupported)}, which the gateway cannot serve for "
                    f"{model_type.value} models (it can: "
                    f"{', '.join(sorted(op.value for op in servable))})",
                )
        if provider is Provider.GOOGLE:
            for index, deployment in enumerate(deployments):
                where = f"deployments[{index}]." if "deployments" in document else ""
                _check_vertex_audio(operations, deployment, where, fail)
        return cls(
            id=model_id,
            name=name,
            provider=provider,
            model_type=model_type,
            code=code,
            parameters=parameters,
            costs={key: float(value) for key, value in costs.items()},
            operations=operations,
            projects=tuple(string_list("projects")),
            private=private,
            created=created,
            deployments=deployments,
            fallbacks=tuple(fallbacks),
            max_output_tokens=max_output_tokens,
        )


def _check_vertex_audio(operations: tuple[Operation, ...], deployment: Deployment, where: str, fail: Any) -> None:
    """What the gateway can do with Vertex speech and transcription.

    Speech (`audio_tts`) is Cloud Text-to-Speech through LiteLLM: `code` names
    the model (such as `chirp`; the voice picks the speaker) and `api_base`, if
    set, is the whole synthesize URL (LiteLLM posts to it as it is), so such a
    model serves speech only. Or it is Gemini speech (`gemini_speech`: a code
    naming `gemini` and `tts`), sent by the gateway to Gemini's `generateContent`
    (`providers/vertex_chat.py`), `api_base` the root URL as for chat; another
    Gemini code cannot list it. Transcription (`audio_stt`) is Speech-to-Text
    v2's recognizer model (`chirp_2`, `chirp_3`...) or a Gemini transcription
    model (its code names `transcribe`), `api_base` their root URL.
    """
    code = deployment.code.lower()
    speaks = gemini_speech(code)
    if Operation.AUDIO_TTS in operations and "gemini" in code and not speaks:
        raise fail(
            "operations",
            "lists audio_tts for a Gemini model that is not a text-to-speech model (its code names 'tts', "
            "such as gemini-2.5-flash-tts); use one, or a Cloud Text-to-Speech model such as chirp",
        )
    if Operation.AUDIO_STT in operations and "gemini" in code and "transcribe" not in code:
        raise fail(
            "operations",
            "lists audio_stt for a Gemini model that is not a transcription model (its code names "
            "'transcribe'); use one, or a Speech-to-Text model such as chirp_2",
        )
    api_base = deployment.parameters.get("api_base")
    synthesizes = isinstance(api_base, str) and api_base.rstrip("/").endswith(CLOUD_TTS_PATH)
    reference = isinstance(api_base, str) and api_base.startswith("$")  # a secret: not known until a call
    if speaks and synthesizes:
        raise fail(
            f"{where}parameters.api_base",
            f"of a Gemini speech model is Vertex AI's root URL (as for chat), not a {CLOUD_TTS_PATH} URL",
        )
    cloud_speech = Operation.AUDIO_TTS in operations and not speaks
    if cloud_speech and api_base and not reference and not synthesizes:
        raise fail(f"{where}parameters.api_base", f"of an audio_tts model must be the URL ending in {CLOUD_TTS_PATH}")
    if synthesizes and set(operations) != {Operation.AUDIO_TTS}:
        raise fail(f"{where}parameters.api_base", "is a Cloud Text-to-Speech URL: the model can list audio_tts only")


def _check_mock_parameters(parameters: dict[str, Any], fail: Any) -> None:
    """A Mock model's optional `response` (its answer), `dimensions` (its embeddings')
    and `tool_call` (false, or the tool it calls: `name` and `arguments`)."""
    if not isinstance(parameters.get("response", ""), str):
        raise fail("parameters.response", "must be a string")
    tool_call = parameters.get("tool_call", {})
    if tool_call is not False and not isinstance(tool_call, dict):
        raise fail("parameters.tool_call", "must be false or an object")
    if isinstance(tool_call, dict):
        if not isinstance(tool_call.get("name", ""), str):
            raise fail("parameters.tool_call.name", "must be a string")
        if not isinstance(tool_call.get("arguments", {}), dict):
            raise fail("parameters.tool_call.arguments", "must be an object")
    dimensions = parameters.get("dimensions", 1)
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= 4096:
        raise fail("parameters.dimensions", "must be an integer from 1 to 4096")


def _deployments(given: Any, code: str, parameters: dict[str, Any], fail: Any) -> tuple[Deployment, ...]:
    """The entry's deployments: its `deployments`, each inheriting the top-level
    `code` and `parameters`, or else the top level itself as the only one."""
    if given is None:
        return (Deployment("default", code, parameters),)
    if not isinstance(given, list) or not given:
        raise fail("deployments", "must be a non-empty list of objects")
    deployments = []
    for index, item in enumerate(given):
        where = f"deployments[{index}]"
        if not isinstance(item, dict):
            raise fail(where, "must be an object")
        own = item.get("parameters", {})
        if not isinstance(own, dict):
            raise fail(f"{where}.parameters", "must be an object")
        priority, weight = item.get("priority", 0), item.get("weight", 1)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise fail(f"{where}.priority", "must be an integer")
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight <= 0:
            raise fail(f"{where}.weight", "must be a positive number")
        deployment_code = item.get("code", code)
        if not isinstance(deployment_code, str) or not deployment_code:
            raise fail(f"{where}.code", "must be a non-empty string")
        name = item.get("name", str(index))
        deployments.append(Deployment(str(name), deployment_code, parameters | own, priority, float(weight)))
    if len({d.name for d in deployments}) != len(deployments):
        raise fail("deployments", "names must be unique")
    return tuple(deployments)
