"""1,000 chat calls from unchanged AsyncOpenAI code, sent as Batch API batches by batchery.

    python examples/dropin/thousand_calls.py [STORE]

It runs against batchery's emulator (started here, on 127.0.0.1), so it needs no key and costs
nothing; for the real API, drop the emulator and build `AsyncOpenAI()` as usual. Run it twice:
the second run sends nothing and returns the stored answers at once.
"""

from __future__ import annotations

import asyncio
import sys
import time

from openai import AsyncOpenAI

import batchery
from batchery.emulator import Emulator

QUESTIONS = [f"In one sentence, what is {n} squared?" for n in range(1000)]


async def main(base_url: str, store: str) -> list[str]:
    # The two lines that batch an existing script: wrap the client, keep the calls.
    async with batchery.batching(AsyncOpenAI(base_url=base_url, api_key="emulator"), store=store,
                                 window=1000, window_seconds=10) as client:
        replies = await asyncio.gather(*(
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": q}])
            for q in QUESTIONS))
    return [reply.choices[0].message.content for reply in replies]


if __name__ == "__main__":
    store = sys.argv[1] if len(sys.argv) > 1 else "dropin-store"
    with Emulator() as emulator:
        for run in ("first run", "second run"):
            started = time.perf_counter()
            answers = asyncio.run(main(emulator.base_url("openai"), store))
            seconds = time.perf_counter() - started
            stats = emulator.stats()
            print(f"{run}: {len(answers):,} answers in {seconds:.2f} s; batches created so far: "
                  f"{stats['batches_created']['openai']}, requests sent so far: {stats['requests_processed']:,}")
        print("answer 7:", answers[7])
