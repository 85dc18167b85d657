#!/usr/bin/env bash
# The embedded default model, from nothing (issue: the tiny EMO trained on the synthetic world).
#
#   scripts/train_default_model.sh            # or: make default-model
#
# Steps: render the synthetic world -> preprocess the TRAIN split into shards -> random tiny model
# -> tiny VAE stand-in (and its latents of the training frames, cached) -> EMO stages 1, 2, 3
# -> the VAE decoder fine-tuned alone (encoder frozen, as SD's ft-MSE VAE) -> evaluate on held-out identities -> copy the model
# into src/emoportrait/assets/default_model. Every step is resumable: a finished step is skipped,
# an interrupted training step continues from its last checkpoint (--resume latest), so the recipe
# can be run in pieces. Budgets (world size, steps) are the tiny configs'; override with env vars,
# e.g. IDENTITIES=80 on a faster machine; STEPS_SCALE=4 trains every step 4x its config's max_steps (a bigger budget,
# e.g. on a GPU; 1, the default, passes nothing, so the committed model's commands are unchanged);
# TRAIN_ARGS="--max-steps 2" for a smoke run; INIT_ARGS overrides the
# tiny model config, e.g. INIT_ARGS="--vae.latent_channels=16"; PRECISION (auto | bf16 | fp32) below.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# Threads: training runs alone and uses both cores (TRAIN_THREADS, 2: 0.67 s vs 1.14 s per stage-1 step);
# the evaluation runs two processes of one thread each (two threads per process would spin, docs/training.md).
TRAIN_THREADS=${TRAIN_THREADS:-2}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
WORK=${WORK:-runs/default}
IDENTITIES=${IDENTITIES:-48}
CLIPS=${CLIPS:-6}
SECONDS_PER_CLIP=${SECONDS_PER_CLIP:-8}
WORKERS=${WORKERS:-2}
SEED=${SEED:-0}
STEPS_SCALE=${STEPS_SCALE:-1}
EVAL_CLIPS=${EVAL_CLIPS:-8}     # held-out clips for lip-sync and the VAE ceiling (spread over both held-out splits)
EVAL_FRAMES=${EVAL_FRAMES:-75}  # frames (3 s) per evaluated clip
EVAL_STEPS=${EVAL_STEPS:-10}    # DDIM steps when evaluating
LONG_VIDEOS=${LONG_VIDEOS:-4}   # 20 s videos (references spread over the held-out clips): one alone reads the noise
SPEED_SEEDS=${SPEED_SEEDS:-0,1} # the speed sweep at each of these generation seeds: one sweep of 3 clips can be in order by chance
EMO=("$PY" -m emoportrait)
# Precision: bf16 where training runs on hardware that has it (a bf16 GPU when there is one, else a CPU with
# avx512_bf16, AMX or Arm bf16: pipelines/loading.py, cpu_has_native_bf16), else fp32.
# bf16: the VAE stages train under bf16 autocast (--mixed_precision), stages 1-3 keep an fp32 backbone and
# encode their frames with a bf16 copy of the frozen VAE (--vae_dtype; --latents-dtype for the latent cache):
# 1.7x and 1.3x-1.5x faster steps on this 2-core CPU (docs/benchmarks.md). The shipped model was trained with bf16 (its training record says so).
PRECISION=${PRECISION:-auto}
if [ "$PRECISION" = auto ]; then
  if "$PY" -c "import sys, torch; from emoportrait.pipelines.loading import cpu_has_native_bf16
sys.exit(not (torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_has_native_bf16()))" 2> /dev/null; then
    PRECISION=bf16
  else
    PRECISION=fp32
  fi
fi
case "$PRECISION" in
  bf16) vae_precision=(--mixed_precision=bf16); emo_precision=(--vae_dtype=bf16); latents_dtype=bfloat16 ;;
  fp32) vae_precision=(); emo_precision=(); latents_dtype=float32 ;;
  *) echo "PRECISION must be auto, bf16 or fp32, got '$PRECISION'" >&2; exit 2 ;;
esac
echo "precision: $PRECISION"
read -r -a init_args <<< "${INIT_ARGS:-}"  # words, not globbed: "--face_locator_channels=[8,16,32]"
INIT=("${EMO[@]}" init --config tiny --seed "$SEED" "${init_args[@]}")  # the first init and the resume check
mkdir -p "$WORK"

step() { echo; echo "== $* ($(date +%H:%M:%S))"; }

step "1/9 synthetic world"
if [ ! -f "$WORK/world/manifest.json" ]; then
  "${EMO[@]}" synth --out "$WORK/world" --identities "$IDENTITIES" --clips-per-identity "$CLIPS" \
    --seconds "$SECONDS_PER_CLIP" --size 128 --seed "$SEED" --workers "$WORKERS" --sheet
fi

step "2/9 shards of the train split (held-out identities and sentences are never trained on)"
"$PY" - "$WORK" <<'PYEOF'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
manifest = json.loads((work / "world" / "manifest.json").read_text())
train = [c["video"] for c in manifest["clips"] if c["split"] == "train"]
(work / "train_videos.txt").write_text("".join(f"world/{v}\n" for v in train))  # paths relative to the list
print(f"{len(train)} training clips of {len(manifest['clips'])}")
PYEOF
"${EMO[@]}" preprocess --videos "$WORK/train_videos.txt" --out "$WORK/shards" --size 128 --workers "$WORKERS"

step "3/9 random tiny model"
if [ -d "$WORK/init" ]; then
  # A resumed recipe must start from what this code's `init` makes: an init folder left by older code
  # (e.g. before temporal modules started as the identity) would silently change every later step.
  rm -rf "$WORK/init.check" && "${INIT[@]}" --out "$WORK/init.check" > /dev/null
  "$PY" - "$WORK/init" "$WORK/init.check" <<'PYEOF'
import json
import sys
from pathlib import Path
import torch
from safetensors.torch import load_file
a, b = Path(sys.argv[1]), Path(sys.argv[2])
index_a, index_b = (json.loads((p / "model_index.json").read_text()) for p in (a, b))
# The default guidance and the noise prior travel with the model (a folder from before the prior: none, 0).
for key, default in (("guidance_scale_ref", None), ("guidance_scale_audio", None), ("shared_noise_ratio", 0.0)):
    if index_a.get(key, default) != index_b.get(key, default):
        sys.exit(f"{a}: {key} {index_a.get(key, default)} differs from what `emoportrait init` writes now "
                 f"({index_b.get(key, default)}); remove {a.parent} and rerun")
sched_a, sched_b = (json.loads((p / "scheduler" / "scheduler_config.json").read_text()) for p in (a, b))
if sched_a != sched_b:  # the prediction type and the schedule's ends (models/config.py, ScheduleConfig)
    diff = sorted(k for k in sched_a.keys() | sched_b.keys() if sched_a.get(k) != sched_b.get(k))
    sys.exit(f"{a}: the scheduler differs from what `emoportrait init` writes now ({', '.join(diff)}); "
             f"remove {a.parent} and rerun")
for f in sorted(b.glob("*/*.safetensors")):
    x, y = load_file(str(a / f.relative_to(b))), load_file(str(f))
    if x.keys() != y.keys() or any(not torch.equal(x[k], y[k]) for k in y):
        sys.exit(f"{a} differs from what `emoportrait init` makes now ({f.parent.name}); remove {a.parent} and rerun")
PYEOF
  rm -rf "$WORK/init.check"
else
  "${INIT[@]}" --out "$WORK/init"
fi

train() {  # train STAGE CONFIG INIT OUT
  if [ ! -f "$4/model/model_index.json" ]; then
    local resume=() precision=("${emo_precision[@]}")
    [ -d "$4/checkpoints" ] && resume=(--resume latest)
    [ "$1" = vae ] && precision=("${vae_precision[@]}")
    local steps=()
    if [ "$STEPS_SCALE" != 1 ]; then  # the config's max_steps x STEPS_SCALE, at least 1
      steps=(--max-steps "$("$PY" -c 'import sys, yaml
print(max(1, round(yaml.safe_load(open(sys.argv[1]))["max_steps"] * float(sys.argv[2]))))' "$2" "$STEPS_SCALE")")
    fi
    OMP_NUM_THREADS=$TRAIN_THREADS MKL_NUM_THREADS=$TRAIN_THREADS \
      "${EMO[@]}" train --config "$2" --stage "$1" --data "$WORK/shards" --init "$3" --output-dir "$4" \
      "${resume[@]}" "${precision[@]}" "${steps[@]}" ${TRAIN_ARGS:-}
  fi
}
step "4/9 tiny VAE stand-in";  train vae configs/tiny/vae.yaml "$WORK/init" "$WORK/vae"
# Its latent distribution of every training frame, once (data/latent_cache.py): stages 1-3 keep this encoder, so
# they read the cache (data.latents: auto) instead of decoding and encoding each sampled frame again. It is
# encoded where training runs (preprocess's default: cuda when there is one, else the CPU; CACHE_DEVICE overrides).
cache_device=(); [ -n "${CACHE_DEVICE:-}" ] && cache_device=(--device "$CACHE_DEVICE")
[ -f "$WORK/stage3/model/model_index.json" ] || OMP_NUM_THREADS=$TRAIN_THREADS MKL_NUM_THREADS=$TRAIN_THREADS \
  "${EMO[@]}" preprocess --out "$WORK/shards" --latents "$WORK/vae/model" --latents-dtype "$latents_dtype" \
  "${cache_device[@]}"
step "5/9 stage 1 (image)";    train 1   configs/tiny/stage1.yaml "$WORK/vae/model"   "$WORK/stage1"
step "6/9 stage 2 (video)";    train 2   configs/tiny/stage2.yaml "$WORK/stage1/model" "$WORK/stage2"
step "7/9 stage 3 (speed)";    train 3   configs/tiny/stage3.yaml "$WORK/stage2/model" "$WORK/stage3"
# The decoder alone, for 2000 more steps: the encoder, so the latents stages 1-3 learned, stays bit-identical.
step "8/9 VAE decoder";        train vae configs/tiny/vae_decoder.yaml "$WORK/stage3/model" "$WORK/decoder"
MODEL="$WORK/decoder/model"

step "9/9 evaluation on held-out identities and sentences"
# Then two processes, one core each (evaluation/model_checks.py): lip-sync with own vs shuffled audio (+ identity)
# and the speed sweep at two seeds; four 20 s videos and the VAE's ceiling (the lip-sync clips' ground truth
# through the VAE alone); then the full report on the own-audio videos.
CHECKS=("$PY" -m emoportrait.evaluation.model_checks --model "$MODEL" --set "$WORK/world"
        --out "$WORK/checks" --steps "$EVAL_STEPS" --max-frames "$EVAL_FRAMES")
# First the condition probe (evaluation/condition_probe.py): the stage-3 loss on 16 training samples
# with their own vs shuffled reference and audio, i.e. whether the model uses its conditions at all.
mkdir -p "$WORK/checks"
[ -f "$WORK/checks/probe.json" ] || OMP_NUM_THREADS=$TRAIN_THREADS MKL_NUM_THREADS=$TRAIN_THREADS \
  "$PY" -m emoportrait.evaluation.condition_probe --model "$MODEL" --data "$WORK/shards" --stage 3 \
  --samples 16 --out "$WORK/checks/probe.json" > /dev/null
pids=()
[ -f "$WORK/checks/speed.json" ] || { "${CHECKS[@]}" --checks lipsync,speed --clips "$EVAL_CLIPS" --speed-clips 3 \
  --speed-seeds "$SPEED_SEEDS" & pids+=($!); }
[ -f "$WORK/checks/vae.json" ] || { "${CHECKS[@]}" --checks long,vae --clips "$EVAL_CLIPS" --long-videos "$LONG_VIDEOS" & pids+=($!); }
for p in "${pids[@]}"; do wait "$p"; done
"$PY" -m emoportrait.evaluation.model_checks --model "$MODEL" --set "$WORK/world" --out "$WORK/checks" --checks ""
# The videos record their clip layout (the model's F and overlap): the report reads their seams where the clips join.
"${EMO[@]}" evaluate --set "$WORK/world" --split heldout_identity,heldout_sentence --videos "$WORK/checks/videos/lipsync_own" \
  --max-frames "$EVAL_FRAMES" --out "$WORK/eval" -q
echo
echo "to ship it (float16 weights, half the bytes): $PY scripts/ship_default_model.py $MODEL"
