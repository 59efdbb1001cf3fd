#!/usr/bin/env bash
# Device tool (either kind; carry .whl): each scorer's cost per image at 1024 px on the GPU (issue #24, point 6), with
# real-size random-weight models built from configs (CLIP ViT-L/14 for clip and aesthetic, the safety checker's for
# nsfw): batch 32 as a build scores, then batch 8; a few minutes. Figures in $OUT/scorers_gpu*.json and .log, to set
# beside generation's cost per image in docs/speed.md (SDXL: 0.61 s of H200 time per image at τ = 1).
# .whl: diffusers, transformers, safetensors and scikit-learn (the photos hdiff.bench.natural crops), with their
#   dependencies, for Python 3.12, e.g.
#   pip download --only-binary=:all: --python-version 3.12 -d .whl diffusers transformers safetensors scikit-learn
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; uptime; python3 -c "import torch; print(torch.__version__)"; } 2>&1 | tee $OUT/gpu.log
timeout 300 python3 -m hdiff.cli bench scorers --device cuda --px 1024 --batch 32 --images 256 \
    --out $OUT/scorers_gpu.json 2>&1 | grep -v "it/s]" | tee $OUT/scorers_gpu.log
timeout 200 python3 -m hdiff.cli bench scorers --device cuda --px 1024 --batch 8 --images 64 \
    --out $OUT/scorers_gpu_b8.json 2>&1 | grep -v "it/s]" | tee $OUT/scorers_gpu_b8.log
