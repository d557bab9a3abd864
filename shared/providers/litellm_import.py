"""LiteLLM, imported on first need and configured for a server.

Importing LiteLLM costs seconds and hundreds of MB, so it happens in a worker
thread the first time a request needs it (health checks, model listings and
relayed Azure OpenAI chat completions and embeddings never do; the gateway
loads it before a call's deadline starts: `mapper.load_litellm_for`), with
the flags that keep it off the internet set first. It is not preloaded: a
worker that only relays never pays for it, and an import in the background
would hold the GIL against the calls being served meanwhile.

LiteLLM looks a model's capabilities up in its price list several times per
call (most of the CPU of translating a Claude request); offline, the list is
the one bundled and never changes, so each answer is kept (`_memoized`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import warnings
from types import ModuleType

#: Keep LiteLLM from downloading its price list, tokenizers and other files.
OFFLINE_FLAGS = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_OFFLINE_MODE": "true",
    "HF_HUB_OFFLINE": "1",
}

_module: ModuleType | None = None
_import_lock = threading.Lock()


def _import_litellm() -> ModuleType:
    global _module
    with _import_lock:
        if _module is None:
            for name, value in OFFLINE_FLAGS.items():
                os.environ.setdefault(name, value)
            # LiteLLM dumps its own models holding values of other types than they declare (base64
            # embeddings, a Responses `usage` dict); pydantic would log a warning per call. What
            # callers get is shaped and checked against OpenAI's schema instead (shared/wire.py).
            warnings.filterwarnings("ignore", message="Pydantic serializer warnings", category=UserWarning)
            import litellm

            litellm.suppress_debug_info = True
            litellm.telemetry = False
            litellm.drop_params = False
            litellm.disable_streaming_logging = True
            logging.getLogger("LiteLLM").setLevel(logging.WARNING)
            _memoized()
            _module = litellm
    return _module


def _memoized() -> None:
    """Keep the answers of LiteLLM's capability look-ups (true or false, per model,
    provider and capability) that its Vertex Gemini and Claude translation asks for."""
    import litellm.utils
    from litellm.llms.anthropic.common_utils import AnthropicModelInfo

    litellm.utils.supports_factory = functools.lru_cache(maxsize=4096)(litellm.utils.supports_factory)
    AnthropicModelInfo._supports_model_capability = staticmethod(  # type: ignore[method-assign]
        functools.lru_cache(maxsize=4096)(AnthropicModelInfo._supports_model_capability)
    )


async def litellm() -> ModuleType:
    """The configured `litellm` module; the first call imports it off the event loop."""
    if _module is not None:
        return _module
    return await asyncio.to_thread(_import_litellm)
