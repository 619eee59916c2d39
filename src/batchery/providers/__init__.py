"""The provider registry: adapters load lazily, so only the SDK of the provider in use is imported."""

from __future__ import annotations

import os

from ..errors import ConfigError
from .base import BatchProvider

# name -> (module, class, API-key variable, base-URL variable)
PROVIDERS: dict[str, tuple[str, str, str, str]] = {
    "openai": ("batchery.providers.openai", "OpenAIBatch", "OPENAI_API_KEY", "OPENAI_BASE_URL"),
}


def get_provider(name: str, *, base_url: str | None = None, api_key: str | None = None) -> BatchProvider:
    """Build the adapter for `name`. The key comes from the argument or the provider's usual variable."""
    if name not in PROVIDERS:
        raise ConfigError(f"unknown provider '{name}'; choose one of: {', '.join(PROVIDERS)}")
    module_name, class_name, key_env, url_env = PROVIDERS[name]
    api_key = api_key or os.environ.get(key_env)
    if not api_key:
        raise ConfigError(
            f"{key_env} is not set: export it (or put it in a .env file) to use {name}; "
            "to try batchery without a key, add --emulate"
        )
    import importlib

    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(api_key=api_key, base_url=base_url or os.environ.get(url_env) or None)
