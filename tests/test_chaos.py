"""kill -9 at random moments (seeded), then run again: the job ends exactly once. The long version
is `scripts/chaos.py`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from chaos import run_chaos
from conftest import both_backends


@both_backends
def test_killing_the_cli_at_random_moments_never_duplicates_or_loses_work(tmp_path, store_location):
    report = run_chaos(tmp_path, kills=8, seed=11, n=300, store=store_location)
    assert report["kills"] >= 4, report  # the deaths really happened mid-run
    assert report["batches_created_twice"] == 0, report
    assert report["requests_processed"] == 300 * report["jobs"], report  # no request answered (billed) twice
    assert report["result_lines"] == 300 * report["jobs"] and report["in_order"] and report["all_succeeded"], report
