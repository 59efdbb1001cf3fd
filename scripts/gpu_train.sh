#!/usr/bin/env bash
# Device tool, call 2 of a session (kind nvidia-h200; carry .whl and .gpu): train the embedded shapes model
# (v-prediction) for TRAIN_MINUTES, evaluate it, and return the weights in ≤15 MB parts
# (reassemble here: cat shapes.tar.part.* | tar x -C hdiff/shapes/weights).
# .gpu/shapes_embeddings.npz: python -m hdiff.shapes_training.embed_prompts .gpu/shapes_embeddings.npz
set -uo pipefail
TRAIN_MINUTES=${TRAIN_MINUTES:-6}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
timeout $(python3 -c "print(int($TRAIN_MINUTES * 60 + 120))") python3 -m hdiff.shapes_training.train --out /tmp/shapes \
    --minutes $TRAIN_MINUTES --prediction-type v_prediction --eval-prompts 200 \
    --embeddings .gpu/shapes_embeddings.npz --device cuda 2>&1 | tee $OUT/train.log
cd /tmp/shapes && tar cf /tmp/shapes.tar . && split -b 15M /tmp/shapes.tar $OUT/shapes.tar.part. \
    && sha256sum /tmp/shapes.tar | tee -a $OUT/train.log
