#!/usr/bin/env bash
# One GPU session (device tool): train the embedded shapes model, then the real-size speed benchmark.
# Needs, carried: .whl (diffusers, importlib_metadata, pydantic + deps for Python 3.12) and .gpu (precomputed
# MiniLM embeddings: python -m hdiff.shapes.embed_prompts .gpu/shapes_embeddings.npz;
# python -m hdiff.bench.speed --write-embeddings .gpu/prompt_templates_256.npz --from prompts.jsonl --n 256).
set -uo pipefail
TRAIN_MINUTES=${TRAIN_MINUTES:-4}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch; print(torch.__version__)"; } 2>&1 | tee $OUT/train.log
timeout $((TRAIN_MINUTES * 60 + 150)) python3 -m hdiff.shapes.train --out $OUT/shapes --minutes $TRAIN_MINUTES \
    --embeddings .gpu/shapes_embeddings.npz --device cuda 2>&1 | tee -a $OUT/train.log
timeout 200 python3 -m hdiff.cli bench speed --kandinsky-arch --embeddings .gpu/prompt_templates_256.npz --prompts 256 \
    --steps 40 --taus 1,2 --max-batch 64 --json $OUT/speed_gpu.json 2>&1 | tee $OUT/speed.log
