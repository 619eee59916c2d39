"""A provider is added in three places: its adapter (with its facts), its emulator service, and one
case in the contract tests' list. This checks the three agree, so a provider half added fails here."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import batchery.providers
from batchery.emulator import Emulator
from batchery.limits import LIMITS, BatchLimits
from batchery.providers import PROVIDERS, provider_class
from batchery.providers.base import BatchProvider
from batchery.retry import ErrorCodes
from batchery.states import BatchWord
from batchery.states import OutcomeStatus as S

from .conftest import CASES


def adapter_classes() -> set[type[BatchProvider]]:
    """Every concrete adapter class defined in batchery.providers' modules."""
    found = set()
    for module in pkgutil.iter_modules(batchery.providers.__path__):
        loaded = importlib.import_module(f"batchery.providers.{module.name}")
        for _, cls in inspect.getmembers(loaded, inspect.isclass):
            if issubclass(cls, BatchProvider) and not inspect.isabstract(cls) and cls.__module__ == loaded.__name__:
                found.add(cls)
    return found


def test_every_adapter_is_registered_under_its_own_name():
    registered = {provider_class(name) for name in PROVIDERS}
    assert adapter_classes() == registered
    assert all(provider_class(name).name == name for name in PROVIDERS)


def runs_locally(cls: type[BatchProvider]) -> bool:
    """An adapter whose batches run on this machine (vllm: a command), not at an HTTP API: it has no
    emulator service but a stand-in command (`emulated_url`), no key, price or account codes."""
    return not cls.emulator_service and cls.emulated_url.__func__ is not BatchProvider.emulated_url.__func__


def test_every_adapter_carries_its_providers_facts():
    for name in PROVIDERS:
        cls = provider_class(name)
        # a key, or where Google's own auth finds the credentials (Vertex: Application Default Credentials)
        assert cls.key_variables and all(v.endswith(("_API_KEY", "_CREDENTIALS")) for v in cls.key_variables), name
        assert isinstance(cls.limits, BatchLimits) and isinstance(cls.error_codes, ErrorCodes), name
        assert set(cls.batch_states.values()) <= set(BatchWord), name
        if runs_locally(cls):
            assert cls.url_variable and cls.key_optional and cls.error_codes.transient, name
            assert LIMITS[name] is cls.limits
            continue
        assert cls.url_variable.endswith("_BASE_URL"), name
        assert cls.emulator_service in Emulator.SERVICES, name
        if cls.has_batch_api:
            assert cls.price_id and cls.error_codes.transient and cls.error_codes.account, name
            assert LIMITS[name] is cls.limits


def test_every_batch_provider_has_an_emulator_service_and_a_contract_case():
    batch_providers = {name for name in PROVIDERS
                       if provider_class(name).has_batch_api and not runs_locally(provider_class(name))}
    assert batch_providers == set(Emulator.SERVICES) == {case.provider for case in CASES}
    assert {provider_class(name).emulator_service for name in batch_providers} == set(Emulator.SERVICES)


def test_the_registry_is_one_line_per_provider_naming_only_its_adapter():
    assert all(isinstance(where, str) and where.count(":") == 1 for where in PROVIDERS.values())


def test_lines_a_batch_did_not_return_end_as_the_batch_ended_read_from_each_adapters_status_words():
    cases = {("openai", "expired"): S.EXPIRED, ("openai", "cancelling"): S.MISSING, ("groq", "failed"): S.FAILED,
             ("together", "CANCELLED"): S.CANCELLED, ("together", "COMPLETED"): S.MISSING,
             ("mistral", "TIMEOUT_EXCEEDED"): S.EXPIRED, ("mistral", "CANCELLATION_REQUESTED"): S.MISSING,
             ("gemini", "JOB_STATE_FAILED"): S.FAILED, ("gemini", "JOB_STATE_PARTIALLY_SUCCEEDED"): S.MISSING,
             ("anthropic", "ended"): S.MISSING, ("openai", "a status no adapter knows"): S.MISSING}
    assert {case: provider_class(case[0]).leftover_of(case[1]) for case in cases} == cases
