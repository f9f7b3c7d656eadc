#!/usr/bin/env bash
# The single-node example on a Ray cluster of NNODES nodes with NGPUS GPUs each.
#
#   node 0 (head):    bash examples/verl/run_multi_node.sh head
#   nodes 1..N-1:     HEAD=<head ip> bash examples/verl/run_multi_node.sh worker
#   node 0, then:     NNODES=2 MODEL=... DATA=... bash examples/verl/run_multi_node.sh train [key=value ...]
#
# Every node needs the same Python environment (pip install '/path/to/rollsift[verl]' (a checkout or the wheel) and verl's GPU extras):
# rollsift's verl.plugins entry point must load wherever verl's trainer process lands. Data, model and
# checkpoint paths must be readable on every node (a shared filesystem). The ledger actor is pinned to
# the Ray head node here (ledger.placement=head) and writes its SQLite file to LEDGER, a path on the
# head node's local disk: SQLite's WAL mode wants a local file, and the head node stays the same across
# restarts, so a resumed run finds its ledger.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RAY=${RAY:-ray}
PORT=${PORT:-6379}
NGPUS=${NGPUS:-8}
case "${1:-}" in
  head)
    exec $RAY start --head --port="$PORT" --num-gpus="$NGPUS" ;;
  worker)
    : "${HEAD:?set HEAD to the address of the head node}"
    exec $RAY start --address="$HEAD:$PORT" --num-gpus="$NGPUS" ;;
  train)
    shift
    NNODES=${NNODES:-2}
    LEDGER=${LEDGER:-$HOME/rollsift-ledgers/${EXPERIMENT:-greso_multinode}.sqlite}
    # ray.init() inside verl connects to the running cluster (RAY_ADDRESS=auto)
    RAY_ADDRESS=${RAY_ADDRESS:-auto} NNODES="$NNODES" NGPUS="$NGPUS" \
      exec bash "$HERE/run_single_node.sh" \
        trainer.v1.sampler.sampler_kwargs.ledger.placement=head \
        trainer.v1.sampler.sampler_kwargs.ledger.path="$LEDGER" \
        "$@" ;;
  *)
    sed -n '2,15p' "$0"; exit 2 ;;
esac
