"""The fake models' behaviour knobs: candidate quality, judge noise, position bias, ties and
unreadable replies; deterministic, plumbed through every provider's batch route."""

from __future__ import annotations

import zlib

import orjson
import pytest
from conftest import MODELS, results, start_job

from batchery.emulator import Emulator
from batchery.emulator.anthropic_routes import _execute as anthropic_execute
from batchery.emulator.fake_model import (
    IGNORES_GUIDELINE,
    NOT_JSON_REPLY,
    UNPARSABLE_REPLY,
    Behaviour,
    complete_chat,
    plain_answer,
    reply,
)
from batchery.emulator.gemini_routes import generate as gemini_generate
from batchery.emulator.mistral_routes import _complete as mistral_complete
from batchery.emulator.schema_values import generate
from batchery.emulator.together_routes import _complete as together_complete
from batchery.eval.prompts import compliance_request, pairwise_request, reask_request
from batchery.eval.specs import Example, Statement
from batchery.eval.verdicts import parse_compliance, parse_pairwise
from batchery.providers import get_provider

STATEMENT = Statement(id="be_brief", text="Answer in one short paragraph.", type="GUIDELINE",
                      examples=(Example("Short", "What is tea?", "A drink.", "Tea, which ... (ten pages)"),))
PROMPTS = [f"Question number {i}: what should I cook tonight?" for i in range(2000)]


def judge_reply(request: dict, model: str, behaviour: Behaviour) -> str:
    """What the fake model answers to a batchery request (as every route calls it)."""
    users = [m["content"] for m in request["messages"] if m["role"] == "user"]
    return reply(users[-1], request["response_format"], model=model, behaviour=behaviour, history=users[:-1])[0]


def share(flags) -> float:
    flags = list(flags)
    return sum(flags) / len(flags)


# -- candidates ------------------------------------------------------------------------------------


def test_quality_sets_the_share_of_answers_that_follow_the_guideline():
    behaviour = Behaviour(quality={"good-model": 0.9, "poor-model": 0.3})
    good = [reply(p, model="good-model", behaviour=behaviour)[0] for p in PROMPTS]
    poor = [reply(p, model="poor-model", behaviour=behaviour)[0] for p in PROMPTS]
    assert 0.88 <= share(IGNORES_GUIDELINE not in a for a in good) <= 0.92
    assert 0.27 <= share(IGNORES_GUIDELINE not in a for a in poor) <= 0.33
    assert all(a.startswith("Emulated answer to: Question number") for a in good + poor)
    marked = next(a for a in poor if IGNORES_GUIDELINE in a)
    assert marked.endswith(" (this answer ignores the guideline)")


def test_same_inputs_give_the_same_outputs():
    behaviour = Behaviour(quality={"m": 0.5}, judge_noise={"j": 0.3}, position_bias={"j": 0.7})
    first = [reply(p, model="m", behaviour=behaviour) for p in PROMPTS[:300]]
    assert first == [reply(p, model="m", behaviour=behaviour) for p in PROMPTS[:300]]
    request = pairwise_request("q", "x", "y", model="j", params={}, statement=STATEMENT)
    assert judge_reply(request, "j", behaviour) == judge_reply(request, "j", behaviour)


def test_default_behaviour_answers_as_the_emulator_always_has():
    assert reply("Say hi.") == ("Emulated answer to: Say hi.", 2, 7, False)
    assert all(IGNORES_GUIDELINE not in reply(p, model="any-model")[0] for p in PROMPTS[:500])
    assert Behaviour().value("quality", "x") == 1.0 and Behaviour().value("position_bias", None) == 0.5


def test_schema_requests_without_judge_tags_are_unchanged():
    schema = {"type": "object", "properties": {"compliant": {"type": "boolean"}, "score": {"type": "integer"}},
              "required": ["compliant", "score"]}
    behaviour = Behaviour(quality=0.0, judge_noise=1.0, unparsable=1.0)
    for prompt in PROMPTS[:50]:
        seed = zlib.crc32(prompt.encode()) << 32 | zlib.adler32(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
        expected = orjson.dumps(generate(schema, seed)).decode()
        assert reply(prompt, schema, model="m", behaviour=behaviour)[0] == expected == reply(prompt, schema)[0]


# -- judges --------------------------------------------------------------------------------------


def candidate_answers(n: int = 400) -> list[tuple[str, str]]:
    behaviour = Behaviour(quality={"cand": 0.5})
    return [(p, plain_answer(p, "cand", behaviour)) for p in PROMPTS[:n]]


@pytest.mark.parametrize("scale", ["binary", "likert"])
def test_a_noiseless_judge_follows_the_marker_exactly(scale):
    behaviour = Behaviour(judge_noise={"judge": 0.0})
    answers = candidate_answers()
    assert 0.4 < share(IGNORES_GUIDELINE in a for _, a in answers) < 0.6
    for prompt, answer in answers:
        request = compliance_request(STATEMENT, prompt, answer, model="judge", params={}, scale=scale)
        verdict = parse_compliance(judge_reply(request, "judge", behaviour), scale)
        assert verdict is not None and verdict.compliant == (IGNORES_GUIDELINE not in answer)
        assert 0.6 <= verdict.confidence <= 0.95 and verdict.explanation
        if scale == "likert":
            assert verdict.score in ((4, 5) if verdict.compliant else (1, 2))


def test_judge_noise_flips_that_share_of_verdicts():
    behaviour = Behaviour(judge_noise={"noisy": 0.2})
    answers = candidate_answers(2000)
    flips = []
    for prompt, answer in answers:
        request = compliance_request(STATEMENT, prompt, answer, model="noisy", params={})
        flips.append(parse_compliance(judge_reply(request, "noisy", behaviour)).compliant
                     != (IGNORES_GUIDELINE not in answer))
    assert 0.17 <= share(flips) <= 0.23


def test_pairwise_the_better_answer_wins_and_ties_follow_position_bias():
    behaviour = Behaviour(position_bias={"judge": 0.8})
    good, bad = "Emulated answer to: q", "Emulated answer to: q" + IGNORES_GUIDELINE
    for first, second, winner in ((good, bad, "A"), (bad, good, "B")):
        request = pairwise_request("q", first, second, model="judge", params={}, statement=STATEMENT)
        assert parse_pairwise(judge_reply(request, "judge", behaviour)).winner == winner
    picks = []
    for i, prompt in enumerate(PROMPTS):
        same = good if i % 2 else bad
        request = pairwise_request(prompt, same, same, model="judge", params={}, statement=STATEMENT)
        picks.append(parse_pairwise(judge_reply(request, "judge", behaviour)).winner)
    assert set(picks) == {"A", "B"}
    assert 0.77 <= picks.count("A") / len(picks) <= 0.83


def test_tie_rate_and_trait_comparisons():
    behaviour = Behaviour(tie_rate={"judge": 0.5})
    winners = []
    for prompt in PROMPTS[:1000]:
        request = pairwise_request("", prompt, prompt, model="judge", params={}, trait="Clarity of argument.")
        winners.append(parse_pairwise(judge_reply(request, "judge", behaviour)).winner)
    assert 0.45 <= winners.count("tie") / len(winners) <= 0.55
    assert 0.2 <= winners.count("A") / len(winners) <= 0.3  # the rest split evenly (unbiased)


def test_unparsable_replies_and_the_reask_that_recovers_them():
    behaviour = Behaviour(unparsable={"sloppy": 0.3})
    answers = candidate_answers(1000)
    unread = 0
    for prompt, answer in answers:
        request = compliance_request(STATEMENT, prompt, answer, model="sloppy", params={})
        text = judge_reply(request, "sloppy", behaviour)
        if parse_compliance(text, "binary") is not None:
            continue
        unread += 1
        assert text == UNPARSABLE_REPLY
        again = parse_compliance(judge_reply(reask_request(request, text), "sloppy", behaviour), "binary")
        assert again is not None and again.compliant == (IGNORES_GUIDELINE not in answer)
    assert 0.26 <= unread / len(answers) <= 0.34


def test_judge_output_fills_extra_schema_fields_validly():
    request = compliance_request(STATEMENT, "q", "Emulated answer to: q", model="j", params={})
    request["response_format"]["properties"]["category"] = {"type": "string", "enum": ["x", "y"]}
    reply_json = orjson.loads(judge_reply(request, "j", Behaviour()))
    assert reply_json["category"] in ("x", "y") and reply_json["compliant"] is True
    assert set(reply_json) == {"explanation", "compliant", "confidence", "category"}


def test_invalid_structured_answers_a_share_badly_for_the_first_asks_then_fits():
    """A share of structured requests (drawn from the first ask, so a request and its re-asks agree)
    get `invalid_attempts` answers that do not fit: prose, then JSON that breaks the schema; the ask
    after that many corrections fits. Requests without a schema, and other models, are untouched."""
    from batchery.structured import reask_request as structured_reask
    from batchery.structured import schema_text, verdict

    schema = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}
    behaviour = Behaviour(invalid_structured={"sloppy": 0.25}, invalid_attempts={"sloppy": 2})
    text = schema_text(schema)

    def answer(request: dict, model: str = "sloppy") -> str:
        return judge_reply(request, model, behaviour)

    bad = 0
    for prompt in PROMPTS[:400]:
        request = {"messages": [{"role": "user", "content": prompt}], "response_format": schema}
        first = answer(request)
        assert verdict(text, answer(request, "careful")) is None  # another model fits every time
        if verdict(text, first) is None:
            continue
        bad += 1
        assert first == NOT_JSON_REPLY and answer(request) == first  # deterministic
        second = answer(again := structured_reask(request, first, "it is not JSON"))
        assert verdict(text, second)[0] == "schema_mismatch"
        third = answer(structured_reask(again, second, "at $: 'score' is a required property"))
        assert verdict(text, third) is None
    assert 0.2 <= bad / 400 <= 0.3
    assert reply(PROMPTS[0], None, model="sloppy", behaviour=Behaviour(invalid_structured=1.0))[0] == \
        plain_answer(PROMPTS[0], "sloppy")


# -- configuration ---------------------------------------------------------------------------------


def test_behaviour_from_a_config_mapping():
    behaviour = Behaviour.from_dict({"quality": {"small": 0.6, "*": 0.9}, "judge_noise": 0.05,
                                     "position_bias": {"judge": 0.7}})
    assert behaviour.value("quality", "small") == 0.6 and behaviour.value("quality", "other") == 0.9
    assert behaviour.value("judge_noise", "anyone") == 0.05
    assert behaviour.value("position_bias", "judge") == 0.7 and behaviour.value("position_bias", "x") == 0.5
    assert Behaviour.from_dict(behaviour.to_dict()) == behaviour
    assert Behaviour.from_dict(None) == Behaviour()


@pytest.mark.parametrize("data, message", [
    ({"qualty": {"m": 0.5}}, "unknown behaviour knob"),
    ({"quality": {"m": 1.5}}, "from 0 to 1"),
    ({"judge_noise": {"m": "high"}}, "from 0 to 1"),
    ({"position_bias": ["m"]}, "table of model name"),
    ([("quality", 1)], "mapping"),
    ({"invalid_structured": {"m": 2}}, "from 0 to 1"),
    ({"invalid_attempts": {"m": 0.5}}, "whole number"),
    ({"invalid_attempts": -1}, "whole number"),
])
def test_bad_behaviour_config_is_refused_clearly(data, message):
    with pytest.raises(ValueError, match=message):
        Behaviour.from_dict(data)


# -- plumbing ------------------------------------------------------------------------------------


def test_every_answer_builder_applies_the_model_and_behaviour():
    behaviour = Behaviour(quality={"bad-model": 0.0})
    marked = "Emulated answer to: Hello" + IGNORES_GUIDELINE
    chat = {"model": "bad-model", "messages": [{"role": "user", "content": "Hello"}]}
    assert complete_chat(chat, behaviour=behaviour)["choices"][0]["message"]["content"] == marked
    assert together_complete(chat, 0, "id", behaviour=behaviour)["choices"][0]["message"]["content"] == marked
    assert mistral_complete(chat, "bad-model", 0, "id", behaviour=behaviour)["choices"][0]["message"]["content"] == marked
    message = anthropic_execute({**chat, "max_tokens": 100}, "x", behaviour=behaviour)["message"]
    assert message["content"][-1]["text"] == marked
    gemini = gemini_generate({"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}, "models/bad-model", "r",
                             behaviour=behaviour)
    assert gemini["candidates"][0]["content"]["parts"][0]["text"] == marked
    assert complete_chat({**chat, "model": "good"}, behaviour=behaviour)["choices"][0]["message"]["content"] == \
        "Emulated answer to: Hello"


def test_the_emulator_hands_its_behaviour_to_every_service():
    behaviour = Behaviour(quality=0.5)
    configured, plain = Emulator(behaviour=behaviour), Emulator()
    try:
        assert configured.behaviour is behaviour
        assert all(service.behaviour is behaviour for service in configured.services.values())
        assert plain.behaviour == Behaviour()
    finally:
        configured.stop()
        plain.stop()




@pytest.mark.parametrize("provider_name", sorted(MODELS))
def test_generate_then_judge_through_each_providers_sdk(provider_name, make_emulator, tmp_path):
    """Candidates answer with the configured quality, and a noiseless judge's verdicts (read back
    through batchery's job, the provider's official SDK and its batch route) follow the marker."""
    from batchery.store import Store

    model = MODELS[provider_name]
    emulator = make_emulator(behaviour=Behaviour(quality={model: 0.5}, judge_noise={model: 0.0}))
    adapter = get_provider(provider_name, base_url=emulator.base_url(provider_name), api_key="test-key")
    prompts = PROMPTS[:24]
    with Store(tmp_path / "store") as store:
        start_job(store, emulator, [{"id": str(i), "prompt": p, "max_tokens": 200} for i, p in enumerate(prompts)],
                  name="gen", model=model, provider=adapter).run()
        answers = [r.text for r in results(store, "gen")]
        assert 0 < share(IGNORES_GUIDELINE in a for a in answers) < 1
        judging = [{"id": str(i), **compliance_request(STATEMENT, p, a, model=None, params={"max_tokens": 300})}
                   for i, (p, a) in enumerate(zip(prompts, answers, strict=True))]
        start_job(store, emulator, judging, name="judge", model=model, provider=adapter).run()
        verdicts = [parse_compliance(r.text, "binary") for r in results(store, "judge")]
    assert [v.compliant for v in verdicts] == [IGNORES_GUIDELINE not in a for a in answers]
