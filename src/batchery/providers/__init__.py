"""The provider registry: one line per provider, naming its adapter class. Everything else about a
provider (key and URL variables, limits, price id, error codes, emulator service) is on the adapter
class. Adapters load lazily, so only the SDK of the provider in use is imported; see
docs/adding-a-provider.md."""

from __future__ import annotations

import functools
import os

from ..errors import ConfigError
from .base import BatchProvider, register_secret

# name -> "module:AdapterClass"
PROVIDERS: dict[str, str] = {
    "openai": "batchery.providers.openai:OpenAIBatch",
    "anthropic": "batchery.providers.anthropic:AnthropicBatch",
    "gemini": "batchery.providers.gemini:GeminiBatch",
    "mistral": "batchery.providers.mistral:MistralBatch",
    "together": "batchery.providers.together:TogetherBatch",
    "groq": "batchery.providers.groq:GroqBatch",
    "vertex": "batchery.providers.vertex:VertexBatch",
    "openai-compatible": "batchery.providers.openai:OpenAICompatible",
    "vllm": "batchery.providers.vllm:VllmBatch",
}


@functools.cache
def provider_class(name: str) -> type[BatchProvider]:
    """The adapter class for `name`, without a client: no key is needed and no SDK is imported
    (for its facts, batch words and `check`, which read only the request and class attributes)."""
    if name not in PROVIDERS:
        raise ConfigError(f"unknown provider '{name}'; choose one of: {', '.join(PROVIDERS)}")
    import importlib

    module_name, _, class_name = PROVIDERS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def check_request(name: str, canonical: dict) -> str | None:
    """Why provider `name` cannot honour this canonical request (None if it can), with no client."""
    cls = provider_class(name)
    return cls.check(cls.__new__(cls), canonical)


def key_variables(name: str) -> tuple[str, ...]:
    """The environment variables a provider's key is read from."""
    return provider_class(name).key_variables if name in PROVIDERS else ()


def get_provider(name: str, *, base_url: str | None = None, api_key: str | None = None) -> BatchProvider:
    """Build the adapter for `name`. The key comes from the argument or the provider's usual variable."""
    cls = provider_class(name)
    api_key = api_key or next((os.environ[v] for v in cls.key_variables if os.environ.get(v)), None)
    register_secret(api_key)  # whatever a server echoes back, this never reaches the store or the screen
    api_key = api_key or cls.key_optional
    if not api_key:
        names = " or ".join(cls.key_variables)
        raise ConfigError(
            f"{names} is not set: export it (or put it in a .env file) to use {name}; "
            "to try batchery without a key, add --emulate"
        )
    base_url = base_url or os.environ.get(cls.url_variable) or None
    adapter = cls(api_key=api_key, base_url=base_url)
    adapter.origin = endpoint_origin(base_url)
    return adapter


def provider_origin(name: str, base_url: str | None = None) -> str:
    """The origin get_provider's adapter would have, without building it (no key needed)."""
    url_env = provider_class(name).url_variable if name in PROVIDERS else ""
    return endpoint_origin(base_url or os.environ.get(url_env) or None)


EMULATOR_ORIGIN = "emulator"  # every emulator counts as one endpoint, whatever port a run gave it


def endpoint_origin(base_url: str | None) -> str:
    """The endpoint a job's answers come from: "default" (the provider's own URL) or the base URL
    with its scheme and host lower-cased and no trailing slash. Answers are reused only between
    jobs of the same provider and origin, so an emulated or another server's answer is never
    passed off as this endpoint's."""
    if not base_url or not base_url.strip():
        return "default"
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(base_url.strip())
    except ValueError:  # not a URL the SDK could use either; compare it as written
        return base_url.strip().rstrip("/")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query, ""))
