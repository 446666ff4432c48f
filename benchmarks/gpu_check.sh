#!/usr/bin/env bash
# GPU check: the paper-size pipeline on CUDA, with timings and the GPU's name.
#
# Installs nothing and needs no network: it generates a world with the paper's model dims in a
# temporary folder (sepnms must be installed, e.g. `pip install -e .`), then runs, on `--device cuda`:
#   1. `sepnms train` for $STEPS steps (train.max_steps; batch 32 x 32 RoIs, mixed precision),
#   2. `sepnms propose` on every split,
#   3. the benchmarks (propose shared vs reference, CLIP crops cached vs per expression, train
#      throughput and data-loading share, detect images/s in bf16) with --device cuda,
#      and the second stage: `sepnms ground train` ($STEPS iterations, paper MAttNet) + `ground eval`,
#   4. with 2+ GPUs: `sepnms train` and `sepnms propose` under torchrun (NCCL), one process per GPU.
#
#   bash benchmarks/gpu_check.sh                  # STEPS=300 IMAGES=64 by default
#   STEPS=500 IMAGES=128 KEEP=1 bash benchmarks/gpu_check.sh
#
# Environment: STEPS (train steps, 300), IMAGES (world size, 64), WORK (folder; default a new
# temporary one), KEEP=1 keeps it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS="${STEPS:-300}"
IMAGES="${IMAGES:-64}"
WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/sepnms_gpu_check.XXXXXX")}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
[[ "${KEEP:-0}" == 1 ]] || trap 'rm -rf "$WORK"' EXIT

echo "== GPU"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader || echo "(nvidia-smi not found)"
NGPU=$(python - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"CUDA is not available to torch {torch.__version__} (CUDA build {torch.version.cuda}); nothing to check")
for i in range(torch.cuda.device_count()):
    print(f"cuda:{i}: {torch.cuda.get_device_name(i)}", file=sys.stderr)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}", file=sys.stderr)
print(torch.cuda.device_count())
EOF
)

echo "== world: $IMAGES images, paper model dims, in $WORK"
python - "$WORK" "$IMAGES" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from _common import build_workdir
cfg, overrides = build_workdir(Path(sys.argv[1]), int(sys.argv[2]), "paper", extra=["device=cuda"])
Path(sys.argv[1], "overrides.txt").write_text("\n".join(overrides) + "\n")
from sepnms.config import load_config
paper = load_config("paper").grounding.model_dump(mode="json")
import json
Path(sys.argv[1], "grounding.txt").write_text("".join(f"grounding.{k}={json.dumps(v)}\n" for k, v in paper.items()))
print(f"prepared {cfg.workdir}")
EOF

SETS=()
while IFS= read -r o; do [[ -n "$o" ]] && SETS+=(--set "$o"); done < "$WORK/overrides.txt"
CFG=(--config "$WORK/world/config.yaml" "${SETS[@]}" --device cuda --quiet)
TRAIN=(--set train.max_steps="$STEPS" --set train.epochs=100000 --set train.batch_size=32
       --set train.rois_per_expression=32 --set train.max_positive=21 --set train.num_workers=4
       --set train.amp=true --set train.eval_every=100 --set train.checkpoint_every=100
       --set train.val_max_expressions=128 --no-resume)

timed() {  # timed LABEL COMMAND...: run it, print its wall time
    local label=$1; shift
    local t0 t1
    t0=$(date +%s%N)
    "$@"
    t1=$(date +%s%N)
    printf '   >> %s: %d.%03d s\n' "$label" $(((t1 - t0) / 1000000000)) $((((t1 - t0) / 1000000) % 1000))
}

echo "== sepnms train, $STEPS steps, amp (summary: data_time_s / compute_time_s)"
timed "train $STEPS steps" sepnms train "${CFG[@]}" "${TRAIN[@]}"
echo "== sepnms propose, all splits"
timed "propose" sepnms propose "${CFG[@]}" --splits train val testA testB

echo "== benchmarks on cuda"
timed "bench_propose" python benchmarks/bench_propose.py --device cuda --images 16
timed "bench_clip" python benchmarks/bench_clip.py --device cuda --images 8
timed "bench_train" python benchmarks/bench_train.py --device cuda --amp --steps 50 --images "$IMAGES" --workers 4

# the second stage (MAttNet) at paper size: its frozen layer4 is random here (no detector checkpoint)
GSETS=()
while IFS= read -r o; do [[ -n "$o" ]] && GSETS+=(--set "$o"); done < "$WORK/grounding.txt"
GROUND=("${GSETS[@]}" --set grounding.layer4_source=random --set grounding.max_iters="$STEPS"
        --set grounding.eval_every=100 --set grounding.checkpoint_every=100 --set grounding.val_max_sentences=128)
echo "== sepnms ground train (MAttNet, paper size), $STEPS iterations, then ground eval"
timed "ground train $STEPS iterations" sepnms ground train "${CFG[@]}" "${GROUND[@]}" --no-resume
timed "ground eval" sepnms ground eval "${CFG[@]}" "${GROUND[@]}" --methods gt mattnet_dets
timed "bench_ground" python benchmarks/bench_ground.py --device cuda --steps 20 --images "$IMAGES"

# detect: the paper-size detector (ResNet-101, 600x800, 300 RoIs) in bf16, same-size images batched.
# Goal: all 19,994 RefCOCO images in < 2 min on one H100-class GPU, i.e. >= 167 images/s
# (~0.57 TFLOP per image; the compute limit is ~30 s at 40 % of bf16 peak).
echo "== detect (bf16, batch 8, 8 loader workers); goal >= 167 images/s"
timed "bench_detect" python benchmarks/bench_detect.py --device cuda --images 64 --batch 8 --amp bf16 --workers 8

if [[ "$NGPU" -ge 2 ]]; then
    echo "== torchrun: $NGPU processes (NCCL)"
    cp -r "$WORK/work" "$WORK/work_ddp"
    DDP=(--config "$WORK/world/config.yaml" "${SETS[@]}" --set workdir="$WORK/work_ddp" --device cuda --quiet)
    timed "torchrun train $STEPS steps" python -m torch.distributed.run --standalone --nproc_per_node="$NGPU" \
        -m sepnms.cli train "${DDP[@]}" "${TRAIN[@]}"
    timed "torchrun propose" python -m torch.distributed.run --standalone --nproc_per_node="$NGPU" \
        -m sepnms.cli propose "${DDP[@]}" --splits train val testA testB
else
    echo "== one GPU: torchrun part skipped"
fi
echo "== done (work folder: $WORK$([[ "${KEEP:-0}" == 1 ]] && echo ", kept" || echo ", removed"))"
