"""What every provider adapter offers the engine. Adapters translate and call their SDK; the engine
decides everything else (splitting, polling cadence, retries, bookkeeping)."""

from __future__ import annotations

import functools
import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import orjson

from ..errors import AccountError, BatcheryError, ConfigError, ProviderError, RateLimitedError, TransientError
from ..limits import BatchLimits
from ..retry import GENERIC, ErrorCodes, Failure, classify, error_code_of
from ..states import BatchWord, OutcomeStatus

# Outcome statuses a line can end in (short names for the enum's members).
SUCCEEDED, FAILED, EXPIRED, CANCELLED, MISSING = (
    OutcomeStatus.SUCCEEDED, OutcomeStatus.FAILED, OutcomeStatus.EXPIRED, OutcomeStatus.CANCELLED,
    OutcomeStatus.MISSING)

# batchery's words for where a batch stands, the only ones human output uses; the providers' own
# words (`in_progress`, `ended`, `JOB_STATE_SUCCEEDED`) stay in --json and detail views.
BATCH_STATES = tuple(BatchWord)
# Statuses the engine itself writes for batches that never ran at the provider.
_LOCAL_STATUSES = {"rejected": BatchWord.FAILED, "not_sent": BatchWord.CANCELLED}
# How the lines an ended batch did not return end, by how the batch ended (any other way: missing).
_LEFTOVER: dict[str, OutcomeStatus] = {BatchWord.FAILED: FAILED, BatchWord.EXPIRED: EXPIRED, BatchWord.CANCELLED: CANCELLED}


class Outcome(NamedTuple):
    """One returned line, normalised. `response` is the provider's body as JSON bytes. Made with the
    named constructors (`Outcome.succeeded(...)`, `.failed(...)`, `.expired(...)`, `.cancelled(...)`,
    `.ended(status, ...)`); the field order is the store's outcome row."""

    custom_id: str
    status: OutcomeStatus
    text: str | None
    response: bytes | None
    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None  # part of input_tokens served from the provider's prompt cache
    reasoning_tokens: int | None  # part of output_tokens spent thinking
    error_code: str | None
    error_message: str | None
    cache_write_tokens: int | None = None  # part of input_tokens written to the prompt cache (Anthropic)

    @classmethod
    def succeeded(cls, custom_id: str, text: str | None, response: bytes | None,
                  input_tokens: int | None = None, output_tokens: int | None = None,
                  cached_tokens: int | None = None, reasoning_tokens: int | None = None,
                  cache_write_tokens: int | None = None) -> Outcome:
        """An answer; the token counts may come positionally, in field order (as chat_usage gives them)."""
        # tuple.__new__ itself: the NamedTuple's __new__ is one more Python call for every answer collected.
        return tuple.__new__(cls, (custom_id, SUCCEEDED, text, response, input_tokens, output_tokens,
                                   cached_tokens, reasoning_tokens, None, None, cache_write_tokens))

    @classmethod
    def failed(cls, custom_id: str, code: str, message: str, response: bytes | None = None, *,
               input_tokens: int | None = None, output_tokens: int | None = None,
               cached_tokens: int | None = None, reasoning_tokens: int | None = None) -> Outcome:
        """A line the provider answered with an error (its code and message; usage where it counted
        some, as Gemini does for a blocked answer)."""
        return cls(custom_id, OutcomeStatus.FAILED, None, response, input_tokens, output_tokens, cached_tokens,
                   reasoning_tokens, code, message)

    @classmethod
    def ended(cls, custom_id: str, status: OutcomeStatus, code: str, message: str,
              response: bytes | None = None) -> Outcome:
        """A line that ended without an answer in `status` (failed, expired, cancelled, missing)."""
        return cls(custom_id, status, None, response, None, None, None, None, code, message)

    @classmethod
    def expired(cls, custom_id: str, code: str, message: str) -> Outcome:
        return cls.ended(custom_id, OutcomeStatus.EXPIRED, code, message)

    @classmethod
    def cancelled(cls, custom_id: str, code: str, message: str) -> Outcome:
        return cls.ended(custom_id, OutcomeStatus.CANCELLED, code, message)


@dataclass
class RemoteBatch:
    """A provider batch as the engine needs to see it."""

    remote_id: str
    status: str  # the provider's own word, shown to users
    ended: bool  # no further change will happen: results (if any) can be collected
    tag: str | None = None  # our local tag, read back from metadata
    output_file: str | None = None
    error_file: str | None = None
    error: str | None = None  # batch-level failure (e.g. validation), applied to every line
    error_code: str | None = None
    leftover: str = MISSING  # outcome of lines the provider did not return (expired batch -> expired)
    total: int = 0
    completed: int = 0
    failed: int = 0


class LiveResponse(NamedTuple):
    """One live call's HTTP answer, whatever its status: the executor reads the status and the
    rate-limit headers, the adapter decodes the body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class LiveRoute(NamedTuple):
    """Where live/http.py POSTs one live call, and the headers naming the caller (its key among them)."""

    url: str
    headers: Mapping[str, str]


def bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def join_url(base_url: str, path: str) -> str:
    """base + path as the SDKs join them: one slash between, whatever the base ends with."""
    return base_url.rstrip("/") + "/" + path.lstrip("/")


@dataclass
class CallFailure:
    """What an SDK's exception says, in the terms batchery decides on (retry.classify)."""

    status: int | None  # HTTP status; None when no answer came (a network failure)
    message: str
    code: str | None = None  # the provider's error code, type or reason, where it gave one
    retry_after: float | None = None  # seconds the provider asked us to wait, where it said


class BatchProvider(ABC):
    """One provider's adapter, carrying that provider's facts: the registry (providers/__init__.py)
    names only its module and class. See docs/adding-a-provider.md."""

    name: str
    endpoint: str
    limits: BatchLimits  # batch caps and discount, from the provider's documentation
    has_batch_api = True
    polls_run_batches: ClassVar[bool] = False  # its poll runs the batches (vllm): only the job's own run polls
    key_variables: ClassVar[tuple[str, ...]] = ()  # environment variables the key is read from, in order
    url_variable: ClassVar[str] = ""  # environment variable a base URL is read from
    key_optional: ClassVar[str | None] = None  # the key sent when none is set (a local server needs none)
    price_id: ClassVar[str] = ""  # the provider's id in genai-prices
    emulator_service: ClassVar[str] = ""  # its service in the emulator (Emulator.SERVICES)
    error_codes: ClassVar[ErrorCodes] = ErrorCodes()  # its own transient and account error codes (retry.py)
    # The provider's batch statuses in batchery's words (BATCH_STATES): each adapter knows its own.
    batch_states: ClassVar[Mapping[str, str]] = {}
    # Where this adapter's calls go ("emulator", "default" or a normalised base URL; set by
    # get_provider): stored answers are reused only between jobs of the same origin. None: unknown.
    origin: str | None = None
    # Flex tier (`--mode flex`): live calls ask for it with this body field, and an answer names the
    # tier that served it at tier_path. flex_tier False: the provider has no such tier.
    flex_tier: ClassVar[bool] = False
    tier_field: ClassVar[str] = "service_tier"
    tier_path: ClassVar[tuple[str, ...]] = ("service_tier",)
    live_timeout: float | None = None  # seconds an SDK live call waits for its answer (None: the SDK's)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """An adapter that names itself has the usual facts unless it states its own: the key in
        <NAME>_API_KEY, a base URL in <NAME>_BASE_URL, and its name as price id and emulator service."""
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            env = cls.name.upper().replace("-", "_")
            usual = {"key_variables": (f"{env}_API_KEY",), "url_variable": f"{env}_BASE_URL",
                     "price_id": cls.name, "emulator_service": cls.name}
            for fact, value in usual.items():
                if fact not in cls.__dict__:
                    setattr(cls, fact, value)

    def __init__(self, api_key: str, base_url: str | None = None):
        # The SDK is imported and its client made on first use: a live run on the fast path, which
        # needs neither, starts without paying for them.
        self.api_key, self.base_url = api_key, base_url

    @classmethod
    def emulated_url(cls, emulator: Any) -> str:
        """The base URL this adapter is given on the emulator (`--emulate`): its service's address."""
        return emulator.base_url(cls.emulator_service)

    @classmethod
    def state_word(cls, local_state: str, remote_status: str | None) -> str:
        """batchery's word for a batch in local state `local_state` (planned, creating, submitted,
        collected) whose provider status is `remote_status`."""
        if local_state == "planned":
            return "planned"
        if remote_status is None:
            return "submitted" if local_state != "collected" else "done"
        word = _LOCAL_STATUSES.get(remote_status) or cls.batch_states.get(remote_status)
        if word is None:  # a status this adapter does not know yet: say only whether it has ended
            word = "done" if local_state == "collected" else "running"
        return str(word)  # plain text: words are counted in dicts dumped as JSON

    @classmethod
    def leftover_of(cls, remote_status: str) -> OutcomeStatus:
        """RemoteBatch.leftover for a batch in provider status `remote_status`: its unreturned lines
        end as the batch did where it failed, expired or was cancelled, else they are missing."""
        return _LEFTOVER.get(cls.batch_states.get(remote_status, ""), MISSING)

    def check(self, request: dict) -> str | None:
        """Why this provider cannot honour a canonical request (None if it can). Called for every
        input line before anything is sent, so a field is never silently dropped."""
        return None

    # The provider's own batch line: where it carries the id and the request. `--raw` input
    # lines are read with these, and `wrap` writes them.
    line_id_field = "custom_id"
    line_body_field = "body"
    model_in_body = True  # False where the model is set once per batch (Gemini, Mistral)

    @abstractmethod
    def translate(self, request: dict) -> dict:
        """The provider's request body for a neutral canonical request."""

    def wrap(self, custom_id: str, body: dict) -> dict:
        """One line of the provider's batch format around a request body."""
        return {self.line_id_field: custom_id, self.line_body_field: body}

    def encode(self, custom_id: str, request: dict) -> bytes:
        """One line of the batch input file batchery writes (no trailing newline). For providers
        that take requests in the create call, it is whatever `create` will read back.
        A `--raw` request carries the provider's own body and is sent as it is."""
        body = request["raw"] if "raw" in request else self.translate(request)
        return orjson.dumps(self.wrap(custom_id, body))

    @abstractmethod
    def upload(self, path: Path) -> str:
        """Make a batch input file available to `create`; return the reference to pass it (the
        provider's file id, or for providers that take requests inline, the local path)."""

    @abstractmethod
    def create(self, input_file: str, model: str, tag: str) -> RemoteBatch:
        """Create a batch tagged with `tag` so `find` can recognise it after a lost response."""

    # Watching, by default through the provider's batch list: an adapter gives `listed` and `fetch`,
    # or its own `find` and `poll` where its API offers another way.

    def find(self, tags: set[str]) -> dict[str, RemoteBatch]:
        """Remote batches carrying any of these tags (the reconciliation path after a crash)."""
        with self._errors("list batches"):
            return find_tagged(self.listed(), tags)

    def poll(self, remote_ids: list[str]) -> dict[str, RemoteBatch]:
        """Current state of these batches, with as few calls as the API allows."""
        with self._errors("poll"):
            return poll_listed(self.listed(), remote_ids, self.fetch)

    def listed(self) -> Iterable[RemoteBatch]:
        """The account's batches, newest first, read lazily page after page (a walk stops as soon
        as it has what it needs)."""
        raise NotImplementedError(f"{self.name} does not list its batches")

    def fetch(self, remote_id: str) -> RemoteBatch:
        """One batch, asked for by its id."""
        raise NotImplementedError(f"{self.name} does not fetch a batch by its id")

    @abstractmethod
    def cancel(self, remote_id: str) -> None:
        """Ask the provider to cancel; partial results arrive later through `outcomes`."""

    @abstractmethod
    def outcomes(self, remote: RemoteBatch) -> Iterator[Outcome]:
        """Every line the provider returned for an ended batch, in the order it returned them."""

    # -- errors: one place where an SDK's exceptions become batchery's ------------------------------

    def describe_error(self, exc: Exception) -> CallFailure | None:
        """What an exception of this adapter's SDK says; None when it is not one of the SDK's."""
        return None

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Around every SDK call (downloads being streamed included): network failures of the SDK's
        HTTP library and the SDK's own errors become TransientError, AccountError or ProviderError
        (see retry.py), with the provider's message redacted of any key and never the request
        headers, which carry it."""
        try:
            yield
        except BatcheryError:
            raise
        except Exception as exc:
            if isinstance(exc, network_errors()):
                failure: CallFailure | None = CallFailure(None, f"{type(exc).__name__}: {exc}")
            else:
                failure = self.describe_error(exc)
            if failure is None:
                raise
            raise call_error(self.name, action, failure, self.error_codes) from None

    def http_error(self, action: str, status: int | None, body: bytes = b"",
                   headers: Mapping[str, str] | None = None, message: str | None = None) -> BatcheryError:
        """The exception for a failed raw HTTP answer (for callers that speak HTTP below the SDK):
        classified by the same rule as the SDK's errors (retry.classify_http), with the wait the
        provider asked for."""
        text = message or body[:300].decode(errors="replace") or f"HTTP {status} with no body"
        failure = CallFailure(status, text, error_code_of(body), retry_after_of(headers or {}, body))
        return call_error(self.name, action, failure, self.error_codes)

    # -- live mode: one request per call, through the SDK's async client, no SDK retries (the
    # executor paces, retries and cools down for every provider alike) -----------------------------

    _live_client: Any = None

    def open_live_client(self) -> Any:
        """The SDK's async client for live calls (made on first use, inside the running loop)."""
        raise ConfigError(f"{self.name} has no live mode in batchery yet")

    @property
    def live_client(self) -> Any:
        if self._live_client is None:
            self._live_client = self.open_live_client()
        return self._live_client

    def live_body(self, line: bytes) -> dict:
        """The request body inside a stored batch line."""
        return orjson.loads(line)[self.line_body_field]

    def with_tier(self, body: dict, tier: str) -> dict:
        """A live body asking for a service tier (flex), in the field the provider's API reads."""
        return {**body, self.tier_field: tier}

    def served_tier(self, outcome: Outcome) -> str | None:
        """The tier an answer says served it, in lower case ("flex", "default", ...); None: it does not say."""
        try:
            found: Any = orjson.loads(outcome.response) if outcome.response else None
        except orjson.JSONDecodeError:
            return None
        for step in self.tier_path:
            found = found.get(step) if isinstance(found, dict) else None
        return found.lower().removeprefix("service_tier_") if isinstance(found, str) else None

    async def send(self, body: dict, model: str) -> LiveResponse:
        """Make one live call through the SDK; a response of any status is returned, a network
        failure raises TransientError."""
        raise ConfigError(f"{self.name} has no live mode in batchery yet")

    live_path: ClassVar[str] = ""  # where the fast path posts a live call, below the base URL
    default_base_url: ClassVar[str] = ""  # the SDK's base URL, when none is given

    def live_route(self, model: str) -> LiveRoute | None:
        """Where the fast path (live/http.py) POSTs a live call for `model`, with the SDK's URL and
        headers; None: this adapter's live calls go through its SDK (`send`)."""
        if not self.live_path:
            return None
        return LiveRoute(join_url(self.base_url or self.default_base_url, self.live_path), self.live_headers())

    def live_headers(self) -> dict[str, str]:
        """The headers the SDK sends with a call: its key as a Bearer token, and any it adds."""
        return bearer(self.api_key)

    def live_payload(self, body: dict, model: str) -> dict:
        """The JSON a fast-path live call posts for a stored body (the model added where the
        provider's batch lines leave it out)."""
        return body

    def decode_live(self, custom_id: str, status: int, body: Any) -> Outcome | None:
        """A live response body (parsed JSON) -> Outcome, or None when it is not one the provider sends."""
        return None

    def live_outcome(self, custom_id: str, response: LiveResponse) -> Outcome:
        """Every live response ends in an outcome: decoded, or failed with its HTTP status."""
        try:
            body = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            body = None
        outcome = self.decode_live(custom_id, response.status, body) if body is not None else None
        if outcome is None:
            text = response.body[:300].decode(errors="replace")
            return scrub(Outcome.failed(custom_id, f"http_{response.status}", text or f"HTTP {response.status} with no body"))
        return scrub(outcome)

    async def aclose(self) -> None:
        """Close the async client that live calls opened, if any."""
        client, self._live_client = self._live_client, None
        close = getattr(client, "close", None)
        if close is not None:
            result = close()
            if hasattr(result, "__await__"):
                await result


class StainlessBatch(BatchProvider):
    """An adapter on a Stainless-generated SDK (openai, anthropic, groq, together): a client class
    and its ``Async`` twin that take the same arguments, and the same error classes."""

    sdk_module: ClassVar[str]  # the SDK's package
    sdk_client: ClassVar[str]  # its client class; the async one is "Async" + this name

    @functools.cached_property
    def _sdk(self) -> Any:
        return importlib.import_module(self.sdk_module)  # lazy: only the provider in use pays for its import

    @functools.cached_property
    def client(self) -> Any:
        # SDK retries off: the engine retries every provider's failed calls alike (Retry-After honoured).
        return getattr(self._sdk, self.sdk_client)(api_key=self.api_key, base_url=self.base_url, max_retries=0)

    def open_live_client(self) -> Any:
        # A longer wait (flex answers take minutes) keeps the SDKs' 5 s to connect.
        wait = {} if self.live_timeout is None else {"timeout": self._sdk.Timeout(self.live_timeout, connect=5.0)}
        return getattr(self._sdk, "Async" + self.sdk_client)(
            api_key=self.client.api_key, base_url=self.client.base_url, max_retries=0, **wait)

    async def send(self, body: dict, model: str) -> LiveResponse:
        return await post_stainless(self, self.live_path, body)

    def describe_error(self, exc: Exception) -> CallFailure | None:
        return stainless_failure(self._sdk, exc, self.error_message(exc))

    def error_message(self, exc: Exception) -> str:
        """What an SDK error says, for the message batchery shows (an adapter may read its body)."""
        return str(getattr(exc, "message", None) or exc)


# -- errors and secrets ----------------------------------------------------------------------------

_MIN_SECRET = 12  # shorter values ("k", "emulator") are placeholders, and too common a string to cut
_REDACTED = "[key redacted]"
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """A key this process was given (not only from the environment): redacted wherever it shows."""
    if value and len(value) >= _MIN_SECRET:
        _secrets.add(value)


def _known_secrets() -> set[str]:
    from . import (  # every registered adapter names its key variables
        PROVIDERS,
        key_variables,
    )

    found = set(_secrets)
    for name in PROVIDERS:
        for variable in key_variables(name):
            value = os.environ.get(variable, "")
            if len(value) >= _MIN_SECRET:
                found.add(value)
    return found


def redact(text: str) -> str:
    """The text with every key batchery knows of (given to an adapter, or in a provider's key
    variable) replaced: servers sometimes echo the key in their error messages."""
    if not text:
        return text
    for secret in _known_secrets():
        if secret in text:
            text = text.replace(secret, _REDACTED)
    return text


def scrub(outcome: Outcome) -> Outcome:
    """A failed outcome's message and body redacted of keys before they are stored or shown."""
    if outcome.status == SUCCEEDED:
        return outcome
    message = redact(outcome.error_message) if outcome.error_message else outcome.error_message
    response = outcome.response
    if response:
        cleaned = redact(response.decode(errors="replace"))
        response = cleaned.encode() if cleaned != response.decode(errors="replace") else response
    if message == outcome.error_message and response is outcome.response:
        return outcome
    return outcome._replace(error_message=message, response=response)


@functools.cache
def network_errors() -> tuple[type[BaseException], ...]:
    """Network failures of whichever HTTP library an SDK runs on (httpx, httpx2 in newer SDKs, aiohttp):
    a refused connection, a timeout, a download cut mid-way (RemoteProtocolError)..."""
    found: list[type[BaseException]] = []
    for name, error in (("httpx", "TransportError"), ("httpx2", "TransportError"),
                        ("aiohttp", "ClientError")):  # google-genai's async client runs on aiohttp when installed
        try:
            found.append(getattr(importlib.import_module(name), error))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def call_error(provider: str, action: str, failure: CallFailure, codes: ErrorCodes = GENERIC) -> BatcheryError:
    """A failed provider call as the exception the engine acts on (the kinds: retry.classify, with
    the provider's own `codes`): RateLimitedError or TransientError (with the wait asked for),
    AccountError, or ProviderError for a refusal of the request itself."""
    message = redact(failure.message)
    kind = classify(failure.status, failure.code, codes)
    if kind in (Failure.TRANSIENT, Failure.RATE_LIMITED):
        where = f"HTTP {failure.status}: " if failure.status is not None else ""
        error = RateLimitedError if kind is Failure.RATE_LIMITED else TransientError
        return error(f"{provider} {action}: {where}{message}", failure.retry_after)
    if kind is Failure.ACCOUNT:
        from . import key_variables

        return AccountError(
            f"{provider} {action} refused ({failure.status}): {message.rstrip('.')}. The key or account was refused: "
            f"check {' or '.join(key_variables(provider))} (and the account's access, quota and billing)")
    return ProviderError(f"{provider} {action} refused ({failure.status}): {message}")


def stainless_failure(sdk: Any, exc: Exception, message: str) -> CallFailure | None:
    """CallFailure for the Stainless-generated SDKs (openai, anthropic, groq, together)."""
    if isinstance(exc, sdk.APIConnectionError):  # timeouts included
        return CallFailure(None, f"{type(exc).__name__}: {message}")
    if isinstance(exc, sdk.APIStatusError):
        body: dict = exc.body if isinstance(exc.body, dict) else {}
        inner = body.get("error")
        error: dict = inner if isinstance(inner, dict) else body
        code = getattr(exc, "code", None) or error.get("code") or error.get("type")
        return CallFailure(exc.status_code, message, code if isinstance(code, str) else None,
                           retry_after_of(exc.response.headers))
    return None


def retry_after_of(headers: Mapping[str, str], body: bytes = b"") -> float | None:
    """The wait a failed call's answer asked for (Retry-After, retry-after-ms, Gemini's RetryInfo)."""
    from ..live.signals import (
        retry_after,  # lazy: live/ imports the engine, which imports this module
    )

    return retry_after(headers, body)


LIST_SCAN = 300  # listed batches a poll looks through before fetching the rest one by one


def find_tagged(listed: Iterable[RemoteBatch], tags: set[str]) -> dict[str, RemoteBatch]:
    """Walk a provider's batch list (newest first) until every tag has been seen."""
    found: dict[str, RemoteBatch] = {}
    for remote in listed:
        if remote.tag in tags:
            found[remote.tag] = remote
            if len(found) == len(tags):
                break
    return found


def poll_listed(listed: Iterable[RemoteBatch], remote_ids: list[str],
                fetch: Callable[[str], RemoteBatch]) -> dict[str, RemoteBatch]:
    """Batch states from one walk of the list, which covers a job's recent batches in a call or
    two; whatever it has not shown within LIST_SCAN entries is fetched one by one."""
    wanted = set(remote_ids)
    seen: dict[str, RemoteBatch] = {}
    for looked, remote in enumerate(listed, 1):
        if remote.remote_id in wanted:
            seen[remote.remote_id] = remote
            if len(seen) == len(wanted):
                break
        if looked >= LIST_SCAN:  # stop on the last entry of a page: reading one more costs a page
            break
    for remote_id in wanted - seen.keys():
        seen[remote_id] = fetch(remote_id)
    return seen


def decode_stream(chunks: Iterable[bytes], decode: Callable[[bytes], Outcome | None]) -> Iterator[Outcome]:
    """The outcomes in a downloaded results stream; an unreadable line yields nothing (the engine
    then names it missing)."""
    for line in split_lines(chunks):
        outcome = decode(line)
        if outcome is not None:
            yield outcome


async def post_stainless(adapter: StainlessBatch, path: str, body: dict) -> LiveResponse:
    """One POST through a Stainless-generated SDK (openai, anthropic, groq, together): its documented
    low-level `post` with cast_to=httpx.Response hands back the HTTP response without parsing it,
    and error statuses come back as the response the SDK attached to its exception. No answer at
    all (a refused connection, a timeout, a body cut short) goes through the adapter's error
    boundary and raises TransientError."""
    client, sdk = adapter.live_client, adapter._sdk
    # The SDK's own HTTP library (httpx, or httpx2 in newer SDKs) names the raw response type.
    http = next(importlib.import_module(c.__module__.partition(".")[0]) for c in type(client._client).__mro__
                if c.__module__.startswith("httpx"))
    with adapter._errors("live call"):
        try:
            response = await client.post(path, cast_to=http.Response, body=body)
        except sdk.APIStatusError as exc:
            response = exc.response
        return LiveResponse(response.status_code, response.headers, response.content)


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Turn a byte stream into lines without holding the whole download in memory."""
    rest = b""
    for chunk in chunks:
        if not chunk:
            continue
        rest += chunk
        lines = rest.split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line.strip():
                yield line
    if rest.strip():
        yield rest
