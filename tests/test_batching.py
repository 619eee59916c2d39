"""The drop-in batching client (dropin.py) against the emulator, through the official async SDKs:
answers are the SDKs' own types, each call gets its own, a re-run sends only what is new, line
errors are the SDKs' exceptions, and windows close by count or by (injected) time."""

from __future__ import annotations

import asyncio

import anthropic
import openai
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion

from batchery import ConfigError, batching
from batchery.engine import PollPolicy

MODEL = "gpt-4o-mini"


def ask(client, prompt: str, **options):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}], **options)


async def no_wait(seconds: float) -> None:
    """A window timer that fires at the loop's next turn (after the calls already scheduled)."""


def sent(emulator, provider: str = "openai") -> tuple[int, int]:
    stats = emulator.stats()["by_provider"][provider]
    return stats["batches_created"], stats["requests_processed"]


def openai_client(emulator, tmp_path, **options):
    sdk = openai.AsyncOpenAI(base_url=emulator.base_url("openai"), api_key="emulator-key")
    options = {"window_seconds": 5.0, "sleep": no_wait, **options}
    return batching(sdk, store=tmp_path / "store", poll=PollPolicy(sleep=emulator.clock.advance), **options)


def test_each_call_gets_its_own_answer_as_the_sdks_type_and_a_rerun_sends_only_what_is_new(make_emulator, tmp_path,
                                                                                           caplog):
    emulator = make_emulator()
    prompts = [f"question {i}" for i in range(10)] + ["question 3"]  # a repeat gets the same answer

    async def script(client, prompts):
        async with client:
            return await asyncio.gather(*(ask(client, p) for p in prompts))

    first = asyncio.run(script(openai_client(emulator, tmp_path, window=4), prompts))
    assert all(isinstance(reply, ChatCompletion) for reply in first)
    assert [r.choices[0].message.content for r in first] == [f"Emulated answer to: {p}" for p in prompts]
    assert sent(emulator) == (3, 10)  # windows of 4, 4 and 2 calls: the repeat shares the first ask

    # The same script again plus one new call: stored answers come back at once, only the new one is sent.
    again = asyncio.run(script(openai_client(emulator, tmp_path, window=4), [*prompts, "question 99"]))
    assert [r.model_dump() for r in again[:-1]] == [r.model_dump() for r in first]
    assert again[-1].choices[0].message.content == "Emulated answer to: question 99"
    assert sent(emulator) == (4, 11)
    assert [r.message for r in caplog.records].count(  # the reuse is announced, once per client
        f"answering calls made before at {emulator.base_url('openai')} from the store {tmp_path / 'store'}: "
        "they are not sent again (use another store to ask afresh)") == 1

    # Reuse never crosses endpoints: another server (another base URL) is asked afresh.
    other = make_emulator()
    asyncio.run(script(openai_client(other, tmp_path, window=4), prompts[:2]))
    assert sent(other) == (1, 2)


def test_a_line_the_provider_refused_raises_the_sdks_exception_while_the_others_answer(emulator, tmp_path):
    async def script():
        async with openai_client(emulator, tmp_path, window=3) as client:
            return await asyncio.gather(ask(client, "fine"), ask(client, "too hot", temperature=5),
                                        client.chat.completions.create(model="missing-model", messages=[
                                            {"role": "user", "content": "who?"}]), return_exceptions=True)

    fine, hot, missing = asyncio.run(script())
    assert fine.choices[0].message.content == "Emulated answer to: fine"
    assert isinstance(hot, openai.BadRequestError) and hot.status_code == 400
    assert hot.code == "decimal_above_max_value" and "temperature" in hot.message
    assert isinstance(missing, openai.NotFoundError)

    async def claude():
        sdk = anthropic.AsyncAnthropic(base_url=emulator.base_url("anthropic"), api_key="emulator-key")
        async with batching(sdk, store=tmp_path / "store", window=2,
                            poll=PollPolicy(sleep=emulator.clock.advance)) as client:
            return await asyncio.gather(*(client.messages.create(model=model, max_tokens=50, messages=[
                {"role": "user", "content": "hello"}], temperature=temperature)
                for model, temperature in (("claude-haiku-4-5", 0.5), ("claude-haiku-4-5", 1.5))),
                return_exceptions=True)

    reply, refused = asyncio.run(claude())
    assert isinstance(reply, Message) and reply.content[0].text == "Emulated answer to: hello"
    assert isinstance(refused, anthropic.BadRequestError) and "temperature" in str(refused)

    # What a batch line cannot carry is refused before anything is sent, naming the argument.
    async def refused_arguments():
        client = openai_client(emulator, tmp_path)
        for options in ({"stream": True}, {"extra_headers": {"x": "y"}}, {"timeout": 30}):
            with pytest.raises(ConfigError, match=f"cannot take {next(iter(options))}="):
                await ask(client, "q", **options)
        with pytest.raises(ConfigError, match="batches only create"):
            client.chat.completions.parse  # noqa: B018
        await client.aclose()

    asyncio.run(refused_arguments())
    with pytest.raises(ConfigError, match="AsyncOpenAI or AsyncAnthropic"):
        batching(openai.OpenAI(api_key="k"))


def test_a_window_is_sent_when_full_or_when_its_time_is_up_not_before(emulator, tmp_path):
    asked: list[float] = []
    time_up = asyncio.Event()

    async def timer(seconds: float) -> None:  # the window's clock: it runs out when the test says so
        asked.append(seconds)
        await time_up.wait()

    async def script():
        client = openai_client(emulator, tmp_path, window=3, window_seconds=30.0, sleep=timer)
        early = [asyncio.ensure_future(ask(client, f"early {i}")) for i in range(2)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert asked == [30.0] and sent(emulator) == (0, 0) and not any(c.done() for c in early)
        time_up.set()  # 30 s later: the two calls go as one batch
        assert [r.choices[0].message.content for r in await asyncio.gather(*early)] == [
            "Emulated answer to: early 0", "Emulated answer to: early 1"]
        assert sent(emulator) == (1, 2)

        time_up.clear()  # a full window goes at once, its timer never running out
        full = await asyncio.gather(*(ask(client, f"full {i}") for i in range(3)))
        assert len(full) == 3 and sent(emulator) == (2, 5)

        left = asyncio.ensure_future(ask(client, "left waiting"))
        await asyncio.sleep(0)
        await client.aclose()  # a call still waiting for its window is cancelled, nothing sent
        with pytest.raises(asyncio.CancelledError):
            await left
        assert sent(emulator) == (2, 5)

    asyncio.run(script())


def test_a_window_in_flight_when_the_process_dies_is_resumed_not_sent_again(make_emulator, tmp_path):
    emulator = make_emulator(processing_seconds=60)
    prompts = [f"question {i}" for i in range(3)]

    def killed(seconds: float) -> None:  # the process dies while waiting for the batch
        raise RuntimeError("killed")

    async def script(poll_sleep):
        sdk = openai.AsyncOpenAI(base_url=emulator.base_url("openai"), api_key="emulator-key")
        async with batching(sdk, store=tmp_path / "store", window=3, poll=PollPolicy(sleep=poll_sleep)) as client:
            return await asyncio.gather(*(ask(client, p) for p in prompts), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(script(killed)))
    assert sent(emulator)[0] == 1
    replies = asyncio.run(script(emulator.clock.advance))
    assert [r.choices[0].message.content for r in replies] == [f"Emulated answer to: {p}" for p in prompts]
    assert sent(emulator) == (1, 3)  # the batch in flight was found and collected, not created again
