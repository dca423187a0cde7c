#!/usr/bin/env bash
# Alternating rounds of every LM peer comparison and of the text-to-image pairs added
# for issue 23 § 5: in each round, each gaf benchmark and then its peer, pair after pair.
#
#     bash benchmarks/peer_rounds.sh [ROUNDS] [DATA_DIR]      (3, /tmp/gaf-peer-rounds)
#
# Run from the repository root with the project's venv active and the peers' venv at
# /tmp/gaf-peers (../shared/peers/setup.sh), on an otherwise idle machine. The data the
# peers read (the examples, pairs, prompts, images and batches the gaf scripts write)
# is written first, untimed, into DATA_DIR. Each run is preceded by a line with the
# time, the load average and the command; the scripts' own result lines follow.
# docs/benchmarks.md quotes the medians of these rounds, section by section. The gaf
# scripts run with --no-cost: their cost pass (issue 23 § 1) comes after the timing and
# changes no figure, so the rounds skip it.
set -u
ROUNDS=${1:-3}
D=${2:-/tmp/gaf-peer-rounds}
P=${PEER_PYTHON:-/tmp/gaf-peers/bin/python}
mkdir -p "$D"

run() {
  echo "-- $(date +%T) $(cut -d' ' -f1-3 /proc/loadavg) :: $*"
  "$@" > "$D/last.out" 2>&1
  echo "rc=$?"
  grep -E "^[a-z_0-9]+ [a-z_0-9]+=" "$D/last.out" | tail -3
  grep -E "Error|Traceback" "$D/last.out" | tail -2
}

python benchmarks/sft_throughput.py 60 16 --tokenizer byte --warmup 0 \
  --write-examples "$D/sft_examples.jsonl"
python benchmarks/reward_model_throughput.py 30 --write-pairs "$D/rm_pairs.jsonl"
for o in kto orpo simpo; do
  python benchmarks/preference_throughput.py --objective "$o" 300 8 --warmup 5 \
    --write-pairs "$D/${o}_pairs.jsonl"
done
python benchmarks/rloo_throughput.py --write-prompts "$D/rloo_prompts.jsonl"
python benchmarks/autoencoder_throughput.py --write-images "$D/ae_images.pt"
python benchmarks/image_to_image_throughput.py --write-data "$D/i2i.pt"

for r in $(seq "$ROUNDS"); do
  echo "== round $r $(date +%T) $(uptime | sed 's/.*load/load/')"
  run python benchmarks/dpo_throughput.py 60 --no-cost
  run "$P" ../shared/peers/trl_dpo_bench.py 60
  run "$P" benchmarks/trl_dpo_precompute_bench.py 60 --reference-every-step --without-checkpointing
  run "$P" benchmarks/trl_dpo_precompute_bench.py 60 --without-checkpointing
  run python benchmarks/sft_throughput.py 60 16 --tokenizer byte --warmup 0 --no-cost
  run "$P" benchmarks/trl_sft_peer.py "$D/sft_examples.jsonl"
  run "$P" benchmarks/trl_sft_peer.py "$D/sft_examples.jsonl" --gradient-checkpointing
  run python benchmarks/reward_model_throughput.py --no-cost
  run "$P" benchmarks/tuned_malloc.py benchmarks/trl_reward_peer.py "$D/rm_pairs.jsonl"
  for o in kto orpo simpo; do
    run python benchmarks/preference_throughput.py --objective "$o" 300 8 --warmup 5 --no-cost
    run "$P" benchmarks/trl_preference_peer.py --trainer "$o" "$D/${o}_pairs.jsonl" \
      --batch 8 --warmup 5
  done
  run python benchmarks/rloo_throughput.py --no-cost
  run "$P" benchmarks/trl_rloo_peer.py "$D/rloo_prompts.jsonl"
  run python benchmarks/autoencoder_throughput.py --no-cost
  run "$P" benchmarks/autoencoder_diffusers_peer.py --images "$D/ae_images.pt" --tune-malloc
  run python benchmarks/image_to_image_throughput.py --no-cost
  run "$P" benchmarks/image_to_image_diffusers_peer.py --data "$D/i2i.pt" --tune-malloc
  run python benchmarks/parti_sampling.py --no-cost
  run "$P" benchmarks/parti_transformers_peer.py
  echo "== end round $r $(date +%T) $(uptime | sed 's/.*load/load/')"
done
