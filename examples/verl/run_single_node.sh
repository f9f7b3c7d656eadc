#!/usr/bin/env bash
# GRPO with rollsift's GRESO selection and ledger inside verl 0.9.1's V1 sync trainer, verl's DAPO
# filter beside it, on one node. Prerequisites (every node): pip install '/path/to/rollsift[verl]' (a checkout or the wheel) plus verl's
# GPU extras (e.g. pip install 'verl[vllm]==0.9.1'); data from examples/verl/prepare_data.py.
#
#   MODEL=Qwen/Qwen2.5-Math-1.5B DATA=~/data/gsm8k NGPUS=8 bash examples/verl/run_single_node.sh [key=value ...]
#
# Extra arguments are Hydra overrides, e.g. trainer.v1.sampler.sampler_kwargs.selector.p_easy=0.3.
# The ledger lands in <trainer.default_local_dir>/rollsift/ledger.sqlite (rollsift ledger show reads it).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON=${PYTHON:-python3}
MODEL=${MODEL:-Qwen/Qwen2.5-Math-1.5B}
DATA=${DATA:-$HOME/data/gsm8k}
NGPUS=${NGPUS:-8}
NNODES=${NNODES:-1}
ROLLOUT=${ROLLOUT:-vllm}                 # vllm | sglang
EXPERIMENT=${EXPERIMENT:-greso_$(basename "$DATA")}

exec $PYTHON -m verl.trainer.main_ppo \
  --config-path="$HERE/config" --config-name=rollsift_grpo \
  data.train_files="$DATA/train.parquet" \
  data.val_files="$DATA/test.parquet" \
  data.train_batch_size=256 \
  data.max_prompt_length=512 \
  data.max_response_length=2048 \
  data.filter_overlong_prompts=true \
  data.truncation=error \
  actor_rollout_ref.model.path="$MODEL" \
  actor_rollout_ref.model.use_remove_padding=true \
  actor_rollout_ref.model.enable_gradient_checkpointing=true \
  actor_rollout_ref.actor.optim.lr=1e-6 \
  actor_rollout_ref.actor.ppo_mini_batch_size=64 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 \
  actor_rollout_ref.actor.use_kl_loss=false \
  actor_rollout_ref.actor.entropy_coeff=0 \
  actor_rollout_ref.actor.clip_ratio_high=0.28 \
  actor_rollout_ref.actor.loss_agg_mode=token-mean \
  actor_rollout_ref.rollout.name="$ROLLOUT" \
  actor_rollout_ref.rollout.n=8 \
  actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
  actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16 \
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=16 \
  trainer.n_gpus_per_node="$NGPUS" \
  trainer.nnodes="$NNODES" \
  trainer.project_name=rollsift \
  trainer.experiment_name="$EXPERIMENT" \
  trainer.logger='[console]' \
  trainer.total_epochs=10 \
  trainer.save_freq=20 \
  trainer.test_freq=10 \
  trainer.v1.sampler.sampler_kwargs.selector.type=greso \
  "$@"
