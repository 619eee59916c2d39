#!/bin/sh
# pairwiseLLM's workflow on a local emulator, in one command: sh examples/pairwise/run.sh
# (from the repository's root; BATCHERY=path/to/batchery to use another installation).
# The same steps run against real providers, hours apart: drop the base_urls from rank.yaml.
set -eu
cd "$(dirname "$0")/../.."
BATCHERY=${BATCHERY:-batchery}
STORE=recipes-out/store

# The emulator every judge's base_url points at; each batch takes 5 seconds to finish.
$BATCHERY emulator --port 8787 --processing-seconds 5 &
EMULATOR=$!
trap 'kill $EMULATOR 2>/dev/null || true' EXIT
until python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8787/_emulator/stats')" \
    2>/dev/null; do sleep 0.2; done

# The emulator takes any key; these stop a real key in your environment from being sent to it.
export OPENAI_API_KEY=emulator ANTHROPIC_API_KEY=emulator GEMINI_API_KEY=emulator

# 1. Submit every judge x template's comparisons (both directions) and leave.
$BATCHERY eval rank examples/pairwise/rank.yaml --no-wait
# 2. Later (here: once the batches are done), from any terminal: collect what finished.
$BATCHERY status --refresh --store $STORE
(cd recipes-out && $BATCHERY collect --all --wait --store store)   # each job's results file lands here
# 3. Rank: the comparisons are read back from the store, nothing is sent again.
$BATCHERY eval rank examples/pairwise/rank.yaml
