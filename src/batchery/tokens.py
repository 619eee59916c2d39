"""Token counts for estimates, before anything is sent.

Input tokens: exact for OpenAI models on o200k_base (gpt-4o, gpt-4.1, gpt-5, o1, o3, o4...): tiktoken
with the o200k_base file bundled in batchery (data/o200k_base.tiktoken.gz, from the bpe-openai
package, whose file is tiktoken's: its SHA-256 is checked against the hash tiktoken itself expects
every time it is read). tiktoken downloads encodings on first use, which hangs or fails on an
offline machine (CI included), so it is never let to fetch: other OpenAI encodings (cl100k_base for
gpt-4 and gpt-3.5) are used only when already in tiktoken's local cache. Otherwise (other providers,
or no encoding) an approximation:

    tokens = ceil(characters / 4) per text, + 4 per message + 3 per request

The 4 characters per token is OpenAI's published rule of thumb for English text with its BPE
encodings (cl100k_base/o200k_base); the per-message and per-request overheads are those of the
OpenAI chat format. It could not be calibrated against tiktoken where this was written (no encoding
was cached and there was no network), so treat it as accurate to roughly ±25% for English prose; it
undercounts code and non-Latin scripts (by about half on Chinese, Japanese and Russian). Every
count says which method produced it.

Output tokens: the request's max_tokens when it gives one (an upper bound, so the estimate errs
high), else DEFAULT_OUTPUT_TOKENS.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import itertools
import math
import os
import tempfile
from binascii import a2b_base64
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

DEFAULT_OUTPUT_TOKENS = 256
CHARS_PER_TOKEN = 4
_PER_MESSAGE = 4
_PER_REQUEST = 3
_CACHED_LENGTH = 200  # characters: a longer text's token count is kept for its next use
APPROXIMATE = f"approximate (characters/{CHARS_PER_TOKEN})"

_ENCODING_FILES = {
    name: f"https://openaipublic.blob.core.windows.net/encodings/{file}.tiktoken"
    for name, file in [("cl100k_base", "cl100k_base"), ("o200k_base", "o200k_base"),
                       ("o200k_harmony", "o200k_base"), ("p50k_base", "p50k_base"),
                       ("p50k_edit", "p50k_base"), ("r50k_base", "r50k_base")]
}


@dataclass
class TokenEstimate:
    input_tokens: int
    output_tokens: int
    method: str  # "tiktoken <encoding>" or APPROXIMATE
    output_method: str  # how output tokens were set


def tiktoken_cache_dir() -> str | None:
    """Where tiktoken keeps downloaded encodings (its own rule), or None when caching is off."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        directory = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        directory = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        directory = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return directory or None


def counter(provider: str, model: str) -> tuple[Callable[[str], int], str]:
    """(count tokens in a text, method name) for a model: tiktoken if usable offline, else the approximation."""
    name = _encoding_name(model) if provider == "openai" else None
    if name is not None:
        encoding = (bundled_o200k() if name == BUNDLED else None) or _cached_encoding(name)
        if encoding is not None:
            # encode_ordinary: special-token strings count as plain text, as in encode(disallowed_special=()),
            # without encode's search for them (a fifth less CPU per text)
            encode = encoding.encode_ordinary
            # a long text is looked up first: a system prompt or rubric repeated on every line is
            # encoded once (tiktoken spends about 0.2 µs a character; the look-up costs a short one more)
            long_text = functools.lru_cache(maxsize=256)(lambda text: len(encode(text)))
            return (lambda text: long_text(text) if len(text) > _CACHED_LENGTH else len(encode(text))), \
                f"tiktoken {encoding.name}"
    return approximate_tokens, APPROXIMATE


def line_tokens(provider, model: str, lines: Iterable[bytes]) -> Iterator[int]:
    """Estimated prompt tokens of each stored batch line (the request body under the adapter's
    line_body_field), as the enqueued-token budget counts them."""
    count, _ = counter(provider.name, model)
    for texts in _line_texts(provider, lines):
        yield _prompt_tokens(texts, count)


def fit_budget(provider, model: str, lines: list[bytes], budget: int) -> tuple[int, int | None]:
    """How many of these batch lines (at least one) fit in one batch under an enqueued-token budget,
    and their estimated prompt tokens. A token is at least one byte, so when the prompts' UTF-8
    bytes fit, all lines do, uncounted: (all, None), without loading a tokenizer (a 10,000-line job
    of short prompts saves most of a second)."""
    texts_of = _line_texts(provider, lines)
    kept: list[list[str]] = []  # counted, if the bytes do not fit, without parsing the lines again
    bound = 0
    for texts in texts_of:
        kept.append(texts)
        bound += _PER_REQUEST + sum(len(t.encode("utf-8", "surrogatepass")) + _PER_MESSAGE for t in texts)
        if bound > budget:
            break
    else:
        return len(lines), None
    count, _ = counter(provider.name, model)
    used = 0
    for n, texts in enumerate(itertools.chain(kept, texts_of)):
        tokens = _prompt_tokens(texts, count)
        if used + tokens > budget:
            return (n, used) if n else (1, tokens)
        used += tokens
    return len(lines), used


def _line_texts(provider, lines: Iterable[bytes]) -> Iterator[list[str]]:
    """The texts of each batch line's request body that its prompt tokens are counted over."""
    import orjson

    field = provider.line_body_field
    for line in lines:
        body = orjson.loads(line).get(field) or {}
        texts = _chat_texts(body)
        yield list(_strings(body, skip=_TEXT_SKIP)) if texts is None else texts


def _prompt_tokens(texts: list[str], count: Callable[[str], int]) -> int:
    """Prompt tokens of a request's texts: each text, a message's overhead each, a request's once."""
    return sum(map(count, texts)) + _PER_MESSAGE * len(texts) + _PER_REQUEST  # map: no generator frame per text


_PLAIN = (int, float, bool, type(None))
_TEXT_SKIP = frozenset({"model", "custom_id", "role", "type"})


def _chat_texts(body: dict) -> list[str] | None:
    """The texts estimate_request would count in a plain chat body (messages of a role and a text
    content, other fields numbers): read directly, as a budget check reads tens of thousands of
    lines. None for any other shape, which the general walk counts."""
    messages = body.get("messages")
    if type(messages) is not list:
        return None
    for name, value in body.items():
        if name != "messages" and name not in _TEXT_SKIP and not isinstance(value, _PLAIN):
            return None
    texts = []
    for message in messages:
        if type(message) is not dict or len(message) != 2 or "role" not in message:
            return None
        content = message.get("content")
        if type(content) is not str:
            return None
        texts.append(content)
    return texts


def approximate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_request(canonical: dict, count: Callable[[str], int], method: str) -> TokenEstimate:
    """Tokens of one canonical request (see requests.py), or of a raw provider body under "raw"."""
    if "raw" in canonical:
        body = canonical["raw"]
        texts = list(_strings(body, skip=_TEXT_SKIP))
        limit = _raw_max_tokens(body)
    else:
        texts = [m["content"] for m in canonical["messages"]]
        if canonical.get("system"):
            texts.append(canonical["system"])
        limit = canonical.get("max_tokens")
    input_tokens = _prompt_tokens(texts, count)
    if limit:
        return TokenEstimate(input_tokens, int(limit), method, "max_tokens")
    return TokenEstimate(input_tokens, DEFAULT_OUTPUT_TOKENS, method, f"default {DEFAULT_OUTPUT_TOKENS} per request")


BUNDLED = "o200k_base"
_BUNDLED_FILE = "o200k_base.tiktoken.gz"


def _encoding_name(model: str) -> str | None:
    """The encoding tiktoken maps an OpenAI model to; None without tiktoken or for a model it does not know."""
    try:
        from tiktoken.model import encoding_name_for_model
    except ImportError:
        return None
    try:
        return encoding_name_for_model(model)
    except KeyError:
        return None


@functools.cache
def bundled_o200k():
    """tiktoken's own o200k_base definition (pattern, special tokens, and the hash of its file)
    with the ranks read from the bundled file instead of downloaded. None if it does not match."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext import openai_public

    def from_bundle(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        from importlib.resources import files

        contents = gzip.decompress((files("batchery.data") / _BUNDLED_FILE).read_bytes())
        if hashlib.sha256(contents).hexdigest() != expected_hash:
            raise ValueError(f"the bundled {_BUNDLED_FILE} is not tiktoken's {url}")
        # Each line is "token rank", and in tiktoken's file (which the hash vouches for) the ranks are
        # the line numbers: read as such, with binascii's decoder, 200,000 tokens load in 0.14 s, not 0.24
        tokens = contents.split()[0::2]
        return dict(zip(map(a2b_base64, tokens), range(len(tokens))))

    openai_public.load_tiktoken_bpe = from_bundle  # only for this call: tiktoken would download
    try:
        definition = openai_public.o200k_base()
    except ValueError:
        return None
    finally:
        openai_public.load_tiktoken_bpe = load_tiktoken_bpe
    return tiktoken.Encoding(**definition)


def _cached_encoding(name: str):
    """tiktoken's encoding `name` if its file is already cached; never downloads."""
    import tiktoken

    url, directory = _ENCODING_FILES.get(name), tiktoken_cache_dir()
    if url is None or directory is None:
        return None
    if not os.path.exists(os.path.join(directory, hashlib.sha1(url.encode()).hexdigest())):
        return None
    try:
        return tiktoken.get_encoding(name)  # reads the cached file (hash-checked); no network
    except Exception:  # a damaged cache file: tiktoken would try to fetch again; fall back instead
        return None


def _strings(value: Any, skip: frozenset[str]):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in skip:
                yield from _strings(v, skip)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, skip)


def _raw_max_tokens(body: dict) -> int | None:
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if isinstance(body.get(key), int):
            return body[key]
    config = body.get("generationConfig") or body.get("generation_config") or {}
    if isinstance(config, dict) and isinstance(config.get("maxOutputTokens"), int):
        return config["maxOutputTokens"]
    return None
