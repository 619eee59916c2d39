"""What counting prompts for the enqueued-token budget costs, piece by piece, in one process: the
tokenizer's load, reading a stored batch line back (parse and find its texts), and tiktoken's count
of those texts, per line and per token, for the prompts of benchmarks/overhead.py and for
English prose. CPU µs (user + system time), medians of the repeats, with the collector paused as
planning pauses it.

    PYTHONPATH=src python benchmarks/count_cost.py
"""

from __future__ import annotations

import gc
import resource
import statistics
from pathlib import Path

import orjson

from batchery.providers import get_provider
from batchery.tokens import _line_texts, _prompt_tokens, bundled_o200k, counter

LINES = 50_000  # one OpenAI batch
REPEATS = 5


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def batch_lines(prompts: list[str]) -> list[bytes]:
    return [orjson.dumps({"custom_id": f"k{i:032x}", "method": "POST", "url": "/v1/chat/completions",
                          "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": p}],
                                   "max_completion_tokens": 64}}) for i, p in enumerate(prompts)]


def main() -> None:
    gc.disable()
    start = cpu()
    bundled_o200k()
    print(f"tokenizer load: {cpu() - start:.3f} s")
    provider = get_provider("openai", base_url="http://127.0.0.1:9", api_key="bench")
    count, _ = counter("openai", "gpt-4o-mini")
    prose = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    cases = {
        "overhead.py's prompts": [f"Question {i}: what is {i} + {i * 7 % 13}?" for i in range(LINES)],
        "300 characters of README": [prose[(i * 37) % (len(prose) - 300):][:300] for i in range(LINES // 10)],
    }
    for name, prompts in cases.items():
        lines = batch_lines(prompts)
        texts = list(_line_texts(provider, lines))
        tokens = sum(_prompt_tokens(t, count) for t in texts)
        read, counted = [], []
        for _ in range(REPEATS):
            start = cpu()
            list(_line_texts(provider, lines))
            middle = cpu()
            for t in texts:
                _prompt_tokens(t, count)
            read.append((middle - start) / len(lines) * 1e6)
            counted.append((cpu() - middle) / len(lines) * 1e6)
        per_line = statistics.median(counted)
        print(f"{name}: {tokens / len(lines):.1f} tokens a line; reading a line back {statistics.median(read):.2f} µs,"
              f" counting it {per_line:.2f} µs ({per_line * len(lines) / tokens:.3f} µs a token)")


if __name__ == "__main__":
    main()
