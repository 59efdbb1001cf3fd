#!/usr/bin/env bash
# Device tool (kind nvidia-h200; carry .whl and .gpu): the real-size speed benchmark with padded micro-batches,
# each hdiff setting run twice (the second timed: kernels warm for every micro-batch size, as in a long build).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
timeout 230 python3 -m hdiff.cli bench speed --kandinsky-arch --embeddings .gpu/prompt_templates_256.npz --prompts 256 \
    --steps 40 --taus 1,2 --max-batch 64 --noise-device device --batch-multiples 8 --repeat \
    --json $OUT/speed_gpu_warm.json 2>&1 | tee $OUT/speed_warm.log
