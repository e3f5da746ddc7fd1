#!/usr/bin/env bash
# The shortest real run of rlhfctl on the arithmetic example (CPU, nothing downloaded): check the reward function,
# serve it over HTTP, train the shipped policy against the server for a few steps, and measure held-out accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled
BIN=.venv/bin
OUT=${OUT:-runs/quickstart}
EX=examples/arithmetic
mkdir -p "$OUT"
$BIN/rlhfctl check-reward $EX/reward_func.py --prompt-data $EX/test.jsonl --label-key answer
$BIN/rlhfctl serve-rm --reward-func $EX/reward_func.py --port 0 > "$OUT/serve-rm.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "serving on" "$OUT/serve-rm.log" && break; sleep 0.2; done
URL=$(grep -o "http://127.0.0.1:[0-9]*/get_reward" "$OUT/serve-rm.log" | head -1)
echo "reward server: $URL"
$BIN/rlhfctl train-ppo --pretrain $EX/policy --remote-rm-url "$URL" --prompt-data $EX/train.jsonl \
  --input-key input --label-key answer --advantage-estimator group_norm --n-samples-per-prompt 8 \
  --rollout-batch-size 32 --micro-rollout-batch-size 32 --train-batch-size 256 --micro-train-batch-size 64 \
  --prompt-max-len 8 --generate-max-len 4 --init-kl-coef 0 --actor-learning-rate 5e-5 --engine torch \
  --max-samples $(( ${STEPS:-8} * 32 )) --save-path "$OUT/policy" --ckpt-path "$OUT/ckpt" --seed 1
echo "held-out exact match, before and after:"
$BIN/python $EX/evaluate.py $EX/policy --max-samples 200
$BIN/python $EX/evaluate.py "$OUT/policy" --max-samples 200
