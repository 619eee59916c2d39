"""Make the demo's human labels (examples/eval/labels.jsonl) from a finished demo run.

In a real evaluation a person reads answers from items.jsonl (or the report's table of answers)
and writes one line per answer they judged: {"id": "<item id>", "label": true|false}. The demo
runs on the emulator, whose candidates mark every answer that ignores the guideline with
" (this answer ignores the guideline)"; that marker is the ground truth the emulated judges see
through noise, so here it stands in for the person. The script labels an even, seeded sample of
answers across the candidates:

    make demo   # or: batchery eval run examples/eval/demo.yaml
    python examples/eval/make_labels.py demo-out/eval/items.jsonl examples/eval/labels.jsonl --count 40
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

MARKER = "(this answer ignores the guideline)"  # batchery.emulator.fake_model.IGNORES_GUIDELINE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("items", type=Path, help="items.jsonl of a finished demo run")
    parser.add_argument("labels", type=Path, help="labels file to write")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    answered = [item for item in map(json.loads, args.items.read_text().splitlines()) if item["answer"] is not None]
    by_candidate: dict[str, list[dict]] = {}
    for item in answered:
        by_candidate.setdefault(item["candidate"], []).append(item)
    rng = random.Random(args.seed)
    chosen: list[dict] = []
    names = sorted(by_candidate)
    for i, name in enumerate(names):  # as even as possible across candidates
        share = args.count // len(names) + (i < args.count % len(names))
        chosen += rng.sample(by_candidate[name], min(share, len(by_candidate[name])))
    with args.labels.open("w") as f:
        for item in chosen:
            f.write(json.dumps({"id": item["id"], "label": MARKER not in item["answer"]}) + "\n")
    print(f"{len(chosen)} labels written to {args.labels}")


if __name__ == "__main__":
    main()
