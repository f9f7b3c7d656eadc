#!/usr/bin/env bash
# verl 0.9.1's own trainer entry point with the rollsift plugin (GRESO + verl's DAPO filter + the
# ledger) on ONE GPU, SmolLM2-135M-Instruct on the chat-digits set, ~10 minutes. Run from the checkout:
#
#   make real-model                       # .models/smollm2-135m and .models/data/digits_*.jsonl (CPU is enough)
#   make .venv-verl/.installed            # verl 0.9.1 + rollsift's verl extra
#   .venv-verl/bin/pip install 'verl[vllm]==0.9.1'   # vllm==0.24.0 with torch==2.11.0 (verl's own pins); see REQUIREMENT
#   bash examples/verl_one_gpu.sh [hydra key=value ...]
#
# REQUIREMENT, and why there is no vLLM-free variant: verl 0.9.1 generates only through a rollout
# server; its registry (verl/workers/rollout/replica.py, RolloutReplicaRegistry) knows 'vllm',
# 'sglang' and 'trtllm', and `actor_rollout_ref.rollout.name=hf` fails with
#   ValueError: Unknown rollout mode: hf. Available: ['vllm', 'sglang', 'trtllm']
# (verl's HFRollout class still ships but is wired to nothing). So the GPU machine needs vLLM
# (or SGLang) installed in .venv-verl; the script stops with that message when it is missing.
# docs/real_models.md has what was run where.
#
# After the run: rollsift ledger show $OUT ; rollsift ledger card $OUT ; rollsift report $OUT --out $OUT
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$HERE"
PYTHON=${PYTHON:-.venv-verl/bin/python}
MODEL=${MODEL:-$HERE/.models/smollm2-135m}
DATA=${DATA:-$HERE/.models/verl-digits}
OUT=${OUT:-$HERE/runs/verl-one-gpu}
ROLLOUT=${ROLLOUT:-vllm}
STEPS=${STEPS:-20}

if ! "$PYTHON" -c "import ${ROLLOUT}" 2>/dev/null; then
  echo "verl_one_gpu.sh: '$ROLLOUT' is not importable by $PYTHON. verl 0.9.1 has no rollout engine without" >&2
  echo "  vLLM/SGLang/TensorRT-LLM (Unknown rollout mode: hf). Install one into .venv-verl, e.g." >&2
  echo "  .venv-verl/bin/pip install 'verl[vllm]==0.9.1' (vllm==0.24.0, torch==2.11.0), or ROLLOUT=sglang with verl[sglang]." >&2
  exit 2
fi
test -f "$MODEL/config.json" || { echo "no model at $MODEL: run 'make real-model' first" >&2; exit 2; }
if [ ! -f "$DATA/train.parquet" ]; then
  "$PYTHON" -m rollsift.testbed.chat_digits --out "$DATA/jsonl"
  "$PYTHON" examples/verl/prepare_data.py --train "$DATA/jsonl/digits_train.jsonl" \
    --test "$DATA/jsonl/digits_eval.jsonl" --instruction '' --out "$DATA"
fi

exec "$PYTHON" -m verl.trainer.main_ppo \
  --config-path="$HERE/examples/verl/config" --config-name=rollsift_grpo \
  data.train_files="$DATA/train.parquet" data.val_files="$DATA/test.parquet" \
  data.train_batch_size=16 data.max_prompt_length=128 data.max_response_length=24 \
  data.filter_overlong_prompts=true data.truncation=error data.dataloader_num_workers=0 \
  actor_rollout_ref.model.path="$MODEL" \
  actor_rollout_ref.actor.optim.lr=1e-5 \
  actor_rollout_ref.actor.ppo_mini_batch_size=16 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16 \
  actor_rollout_ref.actor.use_kl_loss=false \
  actor_rollout_ref.actor.clip_ratio_high=0.28 \
  actor_rollout_ref.actor.loss_agg_mode=token-mean \
  actor_rollout_ref.rollout.name="$ROLLOUT" \
  actor_rollout_ref.rollout.n=8 \
  actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
  actor_rollout_ref.rollout.gpu_memory_utilization=0.4 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=32 \
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=32 \
  trainer.n_gpus_per_node=1 trainer.nnodes=1 \
  trainer.project_name=rollsift trainer.experiment_name=verl_one_gpu \
  trainer.logger='[console]' trainer.total_training_steps="$STEPS" \
  trainer.save_freq=-1 trainer.test_freq=10 trainer.val_before_train=true \
  trainer.default_local_dir="$OUT" \
  trainer.v1.sampler.sampler_kwargs.selector.type=greso \
  "$@"
