"""Pairwise ranking of any set of items on a described trait (pairwiseLLM's use: writing samples
judged on, say, clarity of argument), with Bradley–Terry strengths, Elo and bias checks.

Pairs are sampled rather than exhaustive (n items need n·(n-1)/2 pairs; sampling gives each item
about `comparisons_per_item` opponents); each pair is shown in a random order, and a chosen share
is judged again with the sides swapped, which measures position bias and reverse consistency.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from ..engine import PollPolicy, Progress
from ..errors import InputError
from ..store import Store
from .config import ModelSpec, RankingConfig
from .pipeline import EvalRunner
from .prompts import PromptTemplate, pairwise_request, rank_variables
from .specs import jsonl_objects


def load_items(path: Path) -> dict[str, str]:
    """Items to rank: JSONL lines {"id", "text"}; ids must be unique."""
    items: dict[str, str] = {}
    for where, obj in jsonl_objects(path):
        item, text = obj.get("id"), obj.get("text")
        if not isinstance(item, (str, int)) or isinstance(item, bool):
            raise InputError(f"{where}: field 'id' must be a string or an integer")
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{where}: field 'text' must be a non-empty string")
        if str(item) in items:
            raise InputError(f"{where}: item id '{item}' appears twice")
        items[str(item)] = text
    if len(items) < 2:
        raise InputError(f"{path}: at least two items are needed to rank")
    return items


def sample_pairs(ids: list[str], per_item: int, reversed_share: float, seed: int) -> list[tuple[str, str]]:
    """Ordered (first, second) pairs: rounds of a random perfect matching until each item has met
    about `per_item` others (or everyone), each pair in a random order, plus the chosen share of
    pairs again in the reversed order."""
    rng = random.Random(seed)
    limit = len(ids) * (len(ids) - 1) // 2
    target = min(limit, (len(ids) * per_item + 1) // 2)
    chosen: set[frozenset[str]] = set()
    met = dict.fromkeys(ids, 0)
    cap = min(per_item, len(ids) - 1)
    pairs: list[tuple[str, str]] = []
    for _ in range(per_item * 20):  # rounds of random matchings; a few more absorb collisions
        if len(chosen) >= target:
            break
        waiting = [i for i in ids if met[i] < cap]
        rng.shuffle(waiting)
        for a, b in zip(waiting[::2], waiting[1::2]):
            key = frozenset((a, b))
            if key in chosen or len(chosen) >= target:
                continue
            chosen.add(key)
            met[a] += 1
            met[b] += 1
            pairs.append((a, b) if rng.random() < 0.5 else (b, a))
    return pairs + [(b, a) for a, b in pairs if rng.random() < reversed_share]


def run_ranking(config: RankingConfig, store: Store, *, send: bool = True,
                on_stage: Callable[[str], None] | None = None,
                on_progress: Callable[[Progress], None] | None = None,
                poll: PollPolicy | None = None, wait: bool = True) -> tuple[dict, Path] | None:
    """Judge the sampled pairs with every judge and each of its prompts (all at once), then rank.
    Returns (report data, report path); with wait=False, None when stages are still open at the
    providers (everything that could be sent was; running it again moves them on)."""
    from . import stats
    from .report import write_report

    items = load_items(config.items)
    pairs = sample_pairs(sorted(items), config.comparisons_per_item, config.reversed_share, config.seed)
    runner = EvalRunner(config, store, send=send, on_stage=on_stage, on_progress=on_progress, poll=poll)
    if not wait:
        runner.check_can_leave()
    comparisons: list[dict] = []
    side = {"A": "first", "B": "second", "tie": "tie"}
    grid = [(j, t) for j in config.judges for t in config.templates(j, "rank")]  # templates × judges
    verdicts: dict[tuple[str, str], dict] = {(j.name, t.name): {} for j, t in grid}

    def requests(judge: ModelSpec, template: PromptTemplate) -> dict[str, dict]:
        built = {}
        for first, second in pairs:  # every template sees the same pairs in the same orders
            if template.builtin:
                request = pairwise_request("", items[first], items[second], model=judge.model,
                                           params=judge.params, trait=config.trait)
            else:
                request = template.request(rank_variables(config.trait, items[first], items[second]),
                                           model=judge.model, params=judge.params)
            request["id"] = f"{first}|{second}"
            built[request["id"]] = request
        return built

    with runner.connections():  # every judge's job with every template at once, polled together
        stages = [runner.judged_stage(template.stage("rank"), judge, partial(requests, judge, template),
                                      template.output.parse, verdicts[judge.name, template.name].update)
                  for judge, template in grid]
        if not runner.run_stages(stages, wait=wait):
            return None  # --no-wait: the stages left are open at the providers
    for judge, template in grid:  # in the config's order, whichever stage finished first
        for rid, verdict in verdicts[judge.name, template.name].items():
            first, second = rid.split("|", 1)
            comparisons.append({"item": f"{first}|{second}" if first < second else f"{second}|{first}",
                                "first": first, "second": second, "judge": template.rater(judge.name),
                                "template": template.name, "winner": side[verdict.winner] if verdict else None})
    data = {
        "title": f"Ranking {config.name}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "spec": f"trait: {config.trait}", "mode": config.mode, "scale": None,
        "candidates": [], "judges": [{"name": j.name, "provider": j.provider, "model": j.model} for j in config.judges],
        "jury_rule": "pooled", "leaderboard": [], "statements": [], "sections": [], "agreement": None,
        "pairwise": stats.pairwise_summary(comparisons),  # clusters: each pair with all its judges and orders
        "templates": stats.per_template({}, {}, comparisons),
        "costs": runner.costs(),
        "notes": [f"{len(items)} items, {len(pairs)} judged pairs per judge ({config.comparisons_per_item} "
                  f"opponents per item sampled; {config.reversed_share:.0%} also judged reversed); "
                  f"trait: {config.trait}"],
    }
    assert config.out is not None
    return data, write_report(data, config.out, parquet=config.parquet)
