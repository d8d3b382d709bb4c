#!/usr/bin/env bash
# Pre-training schedule used for the shipped weights (see medgpu/weights/MODEL_CARD.md).
# Each stage resumes from runs/train/codec.ckpt; minutes are wall-clock budgets.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE
INTRA=${INTRA_MIN:-30} MOTION=${MOTION_MIN:-5} INTER2=${INTER2_MIN:-20} INTER4=${INTER4_MIN:-25}
P_NOISY=${P_NOISY_MIN:-30} P_ROUNDED=${P_ROUNDED_MIN:-120}
python pipelines/train.py --stage intra --minutes "$INTRA" --lr 5e-4
python pipelines/train.py --stage motion --minutes "$MOTION" --frames 2 --lr 1e-3
# the first P-frame codec (its contextual branch collapsed; only its motion coding is kept)
python pipelines/train.py --stage inter --minutes "$INTER2" --frames 2 --lr 5e-4
python pipelines/train.py --stage inter --minutes "$INTER4" --frames 4 --batch 4 --lr 2e-4
# the current P-frame codec: contextual branch copied from the I-frame codec, then trained with the
# noisy rate (about 600 steps) and the rate of the rounded symbols (the shipped weights: 3,245 steps
# in all, run as several resumed pieces of these settings; docs/codec.md, "History")
python pipelines/train.py --stage inter --init-contextual-from-intra --minutes "$P_NOISY" --frames 3 --batch 6 \
    --lr 1e-4 --new-lr 1e-3
python pipelines/train.py --stage inter --minutes "$P_ROUNDED" --frames 3 --batch 6 --max-step 4 \
    --lr 1e-4 --new-lr 1e-3 --rounded-rate --export
