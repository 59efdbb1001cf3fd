#!/usr/bin/env bash
# Device tool (kind nvidia-h200; carry .whl and .gpu): the real-size SDXL arch (random weights, fp16, 64 prompts,
# 1024 px, 30 steps, τ = 1) through `hdiff build` (its flow, temporary Prefect server, writer pool and commit; png at
# the default level) and through `hdiff bench speed` (the sampler alone, and the stock loop), in under 8 minutes.
# Prints build/sampler and build/stock images/s ratios; JSON and logs come back in $OUT.
# Prepare here (CPU), once:
#   python -m hdiff.bench.speed --write-embeddings .gpu/prompt_templates_64.npz \
#       --from data/prompts/prompt_templates.jsonl --n 64
#   python -m hdiff.bench.build --prepare-gpu .gpu --prompts 64     # corpus, embedding cache (no MiniLM there)
# .whl: diffusers, importlib_metadata, pydantic, prefect (with its dependencies) and webdataset for Python 3.12,
#   e.g. pip download --only-binary=:all: --python-version 3.12 -d .whl diffusers prefect webdataset pyyaml
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; python3 -c "import torch; print(torch.__version__)"; } 2>&1 | tee $OUT/gpu.log
python3 - <<'PY' || exit 1
from hdiff.bench.arch import write_arch_model
write_arch_model("/tmp/sdxl-arch", "sdxl", ".gpu/prompt_templates_64.npz")
import yaml
yaml.safe_dump({"name": "gpu-build-sdxl", "output": "/tmp/gpu-build", "source": {"path_or_id": ".gpu/prompts_64.jsonl"},
                "embedding": {"cache_dir": ".gpu/embeddings"}, "sharding": {"min_size": 8, "max_size": 16},
                "model": {"id": "/tmp/sdxl-arch", "device": "cuda:0"},
                "generation": {"steps": 30, "tau": 1.0, "max_batch": 16, "pack_shards": 4, "noise_device": "device"}},
               open("/tmp/gpu-build.yaml", "w"))
PY
start=$(date +%s.%N)
timeout 240 python3 -m hdiff.bench.emulated_build build /tmp/gpu-build.yaml 2>&1 | tail -n 40 | tee $OUT/build.log
echo "build_wall_s $(python3 -c "import time; print(time.time() - $start)")" | tee -a $OUT/build.log
cp /tmp/gpu-build/manifest.json $OUT/ 2>/dev/null
timeout 200 python3 -m hdiff.cli bench speed --arch sdxl --embeddings .gpu/prompt_templates_64.npz --prompts 64 \
    --steps 30 --taus 1 --max-batch 16 --noise-device device --json $OUT/speed.json 2>&1 | tee $OUT/speed.log
python3 - <<'PY' 2>&1 | tee -a $OUT/build.log
import json, os
out = os.environ["OUT"]
wall = float(open(f"{out}/build.log").read().split("build_wall_s ")[-1].split()[0])
speed = json.load(open(f"{out}/speed.json"))
base, run = speed["runs"][0], speed["runs"][-1]
build = 64 / wall
print(f"build {build:.3f} img/s end to end ({wall:.1f} s); sampler {run['images_per_s']:.3f}; stock {base['images_per_s']:.3f}")
print(f"build/sampler {build / run['images_per_s']:.2f}, build/stock {build / base['images_per_s']:.2f}")
PY
