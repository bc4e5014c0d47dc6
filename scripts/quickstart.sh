#!/usr/bin/env bash
# The quickstart: set up, then a complete LoRA fine-tune on the embedded default (a local Ray started
# automatically) on the support-ticket dataset shipped in examples/data. Idempotent: each run starts
# from a fresh base model and a fresh output directory. A few minutes on a laptop CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RAYSFT=.venv/bin/raysft
BASE=runs/quickstart-base
rm -rf "$BASE" runs/quickstart

echo "== 1/5 build a tiny random-weight Llama model and train its tokenizer on the data (no download)"
$RAYSFT model init-tiny "$BASE" --data examples/data/tickets_train.jsonl --vocab-size 1024 --hidden-size 128 --layers 2

echo "== 2/5 check the data"
$RAYSFT data check examples/data/tickets_train.jsonl --tokenizer "$BASE" --max-seq-len 256

echo "== 3/5 exact match of the untrained model on held-out tickets"
$RAYSFT eval --model "$BASE" --data examples/data/tickets_test.jsonl --max-new-tokens 4

echo "== 4/5 fine-tune LoRA on 2 Ray workers"
$RAYSFT train examples/quickstart.yaml

echo "== 5/5 exact match of the fine-tuned model on the same held-out tickets"
$RAYSFT eval --model runs/quickstart --data examples/data/tickets_test.jsonl --max-new-tokens 4
echo "outputs: runs/quickstart/{adapter/,metrics.jsonl,loss_curve.png,summary.json}"
