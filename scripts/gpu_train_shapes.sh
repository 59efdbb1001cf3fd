#!/usr/bin/env bash
# Device tool: train the embedded shapes model (carry .whl and .gpu), return it in ≤15 MB parts under $OUT.
set -uo pipefail
MINUTES=${MINUTES:-2.6}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
timeout 250 python3 -m hdiff.shapes.train --out /tmp/shapes --minutes $MINUTES --eval-prompts 100 \
    --embeddings .gpu/shapes_embeddings.npz --device cuda 2>&1 | tee $OUT/train.log
cd /tmp/shapes && tar cf /tmp/shapes.tar . && split -b 15M /tmp/shapes.tar $OUT/shapes.tar.part. && sha256sum /tmp/shapes.tar | tee -a $OUT/train.log
