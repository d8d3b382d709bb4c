#!/usr/bin/env bash
# Pre-training schedule used for the shipped weights (see medgpu/weights/MODEL_CARD.md).
# Each stage resumes from runs/train/codec.ckpt; minutes are wall-clock budgets.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE
INTRA=${INTRA_MIN:-30} MOTION=${MOTION_MIN:-5} INTER2=${INTER2_MIN:-20} INTER4=${INTER4_MIN:-25}
python pipelines/train.py --stage intra --minutes "$INTRA" --lr 5e-4
python pipelines/train.py --stage motion --minutes "$MOTION" --frames 2 --lr 1e-3
python pipelines/train.py --stage inter --minutes "$INTER2" --frames 2 --lr 5e-4
python pipelines/train.py --stage inter --minutes "$INTER4" --frames 4 --batch 4 --lr 2e-4 --export
