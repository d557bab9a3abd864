"""Calling the providers: one interface, one implementation per way of calling.

base.py            the interface: `Transport` (whole / stream), `Request`, `Answer`, `Upstream`
mapper.py          the one place a catalog entry becomes a `ProviderCall`, its transport chosen
azure_relay.py     Azure OpenAI chat completions and embeddings, sent by the gateway itself
litellm_calls.py   every other operation and provider, through LiteLLM (translations: the openai client)
litellm_import.py  LiteLLM, imported on first need
vertex.py          Vertex AI: Imagen's image generation, LiteLLM for the rest (held to what it can send Google)
responses_chat.py  the Responses API over chat completions, around a provider's own transport (Vertex)
mock.py            the Mock model: no provider called
errors.py          provider failures as gateway errors
"""
