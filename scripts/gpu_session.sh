#!/usr/bin/env bash
# One GPU session (device tool, kind nvidia-h200; carry .whl and .gpu): the real-size speed benchmark, then training
# the embedded shapes model (v-prediction, the trainer's default since the ε model shipped); the weights come back
# in ≤15 MB parts (reassemble: cat shapes.tar.part.* | tar x).
# .whl: diffusers, importlib_metadata, pydantic + deps for Python 3.12. .gpu: precomputed MiniLM embeddings
# (python -m hdiff.shapes.embed_prompts .gpu/shapes_embeddings.npz;
#  python -m hdiff.bench.speed --write-embeddings .gpu/prompt_templates_256.npz --from prompts.jsonl --n 256).
set -uo pipefail
TRAIN_MINUTES=${TRAIN_MINUTES:-4.5}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch; print(torch.__version__)"; } 2>&1 | tee $OUT/gpu.log
timeout 220 python3 -m hdiff.cli bench speed --kandinsky-arch --embeddings .gpu/prompt_templates_256.npz --prompts 256 \
    --steps 40 --taus 1,2 --max-batch 64 --noise-device device --batch-multiples 1,8 \
    --probe-rows 16,32,64,72,74,96,98,112,128 --json $OUT/speed_gpu.json 2>&1 | tee $OUT/speed.log
timeout $(python3 -c "print(int($TRAIN_MINUTES * 60 + 60))") python3 -m hdiff.shapes.train --out /tmp/shapes --minutes $TRAIN_MINUTES --eval-prompts 200 \
    --embeddings .gpu/shapes_embeddings.npz --device cuda 2>&1 | tee $OUT/train.log
cd /tmp/shapes && tar cf /tmp/shapes.tar . && split -b 15M /tmp/shapes.tar $OUT/shapes.tar.part. \
    && sha256sum /tmp/shapes.tar | tee -a $OUT/train.log
