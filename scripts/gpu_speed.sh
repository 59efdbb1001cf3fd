#!/usr/bin/env bash
# Device tool, call 1 of a session (kind nvidia-h200; carry .whl and .gpu): the real-size speed benchmark, unpadded
# micro-batches, each hdiff setting run twice (the second timed: kernels warm for every size, as in a long build),
# the decoder's chunk size and memory format picked by a probe first (the same decoder for baseline and hdiff).
# .whl: diffusers, importlib_metadata, pydantic + deps for Python 3.12. .gpu/prompt_templates_256.npz:
#  python -m hdiff.bench.speed --write-embeddings .gpu/prompt_templates_256.npz --from prompts.jsonl --n 256
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch; print(torch.__version__)"; } 2>&1 | tee $OUT/gpu.log
timeout 300 python3 -m hdiff.cli bench speed --arch kandinsky22 --embeddings .gpu/prompt_templates_256.npz --prompts 256 \
    --steps 40 --taus 1,2 --max-batch 64 --noise-device device --batch-multiples 1 --repeat --decode-probe 16,32,64 \
    --probe-rows 2,8,16,32,64,128 --json $OUT/speed_gpu.json 2>&1 | tee $OUT/speed.log
