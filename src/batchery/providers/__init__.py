"""The provider registry: adapters load lazily, so only the SDK of the provider in use is imported."""

from __future__ import annotations

import os

from ..errors import ConfigError
from .base import BatchProvider, register_secret

# name -> (module, class, API-key variable, base-URL variable)
PROVIDERS: dict[str, tuple[str, str, str, str]] = {
    "openai": ("batchery.providers.openai", "OpenAIBatch", "OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "anthropic": ("batchery.providers.anthropic", "AnthropicBatch", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
    "gemini": ("batchery.providers.gemini", "GeminiBatch", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL"),
    "mistral": ("batchery.providers.mistral", "MistralBatch", "MISTRAL_API_KEY", "MISTRAL_BASE_URL"),
    "together": ("batchery.providers.together", "TogetherBatch", "TOGETHER_API_KEY", "TOGETHER_BASE_URL"),
    "groq": ("batchery.providers.groq", "GroqBatch", "GROQ_API_KEY", "GROQ_BASE_URL"),
    "openai-compatible": ("batchery.providers.openai", "OpenAICompatible", "OPENAI_COMPATIBLE_API_KEY",
                          "OPENAI_COMPATIBLE_BASE_URL"),
}
# Local servers (Ollama, vLLM) often take no key: the SDK still needs a value to send.
_KEY_OPTIONAL = {"openai-compatible": "not-needed"}
# Extra variables some SDKs also read for the key (Gemini accepts GOOGLE_API_KEY too).
_KEY_ALIASES = {"gemini": ("GOOGLE_API_KEY",)}


def provider_class(name: str) -> type[BatchProvider]:
    """The adapter class for `name`, without a client: no key is needed and no SDK is imported
    (for its batch words and its `check`, which read only the request and class attributes)."""
    if name not in PROVIDERS:
        raise ConfigError(f"unknown provider '{name}'; choose one of: {', '.join(PROVIDERS)}")
    import importlib

    module_name, class_name, _, _ = PROVIDERS[name]
    return getattr(importlib.import_module(module_name), class_name)


def check_request(name: str, canonical: dict) -> str | None:
    """Why provider `name` cannot honour this canonical request (None if it can), with no client."""
    cls = provider_class(name)
    return cls.check(cls.__new__(cls), canonical)


def key_variables(name: str) -> tuple[str, ...]:
    """The environment variables a provider's key is read from."""
    return (PROVIDERS[name][2], *_KEY_ALIASES.get(name, ())) if name in PROVIDERS else ()


def get_provider(name: str, *, base_url: str | None = None, api_key: str | None = None) -> BatchProvider:
    """Build the adapter for `name`. The key comes from the argument or the provider's usual variable."""
    if name not in PROVIDERS:
        raise ConfigError(f"unknown provider '{name}'; choose one of: {', '.join(PROVIDERS)}")
    module_name, class_name, key_env, url_env = PROVIDERS[name]
    api_key = api_key or next(
        (os.environ[v] for v in (key_env, *_KEY_ALIASES.get(name, ())) if os.environ.get(v)), None)
    register_secret(api_key)  # whatever a server echoes back, this never reaches the store or the screen
    api_key = api_key or _KEY_OPTIONAL.get(name)
    if not api_key:
        names = " or ".join(key_variables(name))
        raise ConfigError(
            f"{names} is not set: export it (or put it in a .env file) to use {name}; "
            "to try batchery without a key, add --emulate"
        )
    import importlib

    cls = getattr(importlib.import_module(module_name), class_name)
    base_url = base_url or os.environ.get(url_env) or None
    adapter = cls(api_key=api_key, base_url=base_url)
    adapter.origin = endpoint_origin(base_url)
    return adapter


def provider_origin(name: str, base_url: str | None = None) -> str:
    """The origin get_provider's adapter would have, without building it (no key needed)."""
    url_env = PROVIDERS[name][3] if name in PROVIDERS else ""
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
