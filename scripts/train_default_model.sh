#!/usr/bin/env bash
# The embedded default model, from nothing (issue: the tiny EMO trained on the synthetic world).
#
#   scripts/train_default_model.sh            # or: make default-model
#
# Steps: render the synthetic world -> preprocess the TRAIN split into shards -> random tiny model
# -> tiny VAE stand-in -> EMO stages 1, 2, 3 -> evaluate on held-out identities -> copy the model
# into src/emoportrait/assets/default_model. Every step is resumable: a finished step is skipped,
# an interrupted training step continues from its last checkpoint (--resume latest), so the recipe
# can be run in pieces. Budgets (world size, steps) are the tiny configs'; override with env vars,
# e.g. IDENTITIES=80 on a faster machine; TRAIN_ARGS="--max-steps 2" for a smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# One intra-op thread: tiny models spend most of a 2-thread step spinning (docs/training.md); the
# committed default model was trained this way.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
WORK=${WORK:-runs/default}
IDENTITIES=${IDENTITIES:-48}
CLIPS=${CLIPS:-6}
SECONDS_PER_CLIP=${SECONDS_PER_CLIP:-8}
WORKERS=${WORKERS:-2}
SEED=${SEED:-0}
EMO=("$PY" -m emoportrait)
mkdir -p "$WORK"

step() { echo; echo "== $* ($(date +%H:%M:%S))"; }

step "1/8 synthetic world"
if [ ! -f "$WORK/world/manifest.json" ]; then
  "${EMO[@]}" synth --out "$WORK/world" --identities "$IDENTITIES" --clips-per-identity "$CLIPS" \
    --seconds "$SECONDS_PER_CLIP" --size 128 --seed "$SEED" --workers "$WORKERS" --sheet
fi

step "2/8 shards of the train split (held-out identities and sentences are never trained on)"
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

step "3/8 random tiny model"
[ -d "$WORK/init" ] || "${EMO[@]}" init --config tiny --out "$WORK/init" --seed "$SEED"

train() {  # train STAGE CONFIG INIT OUT
  if [ ! -f "$4/model/model_index.json" ]; then
    local resume=()
    [ -d "$4/checkpoints" ] && resume=(--resume latest)
    "${EMO[@]}" train --config "$2" --stage "$1" --data "$WORK/shards" --init "$3" --output-dir "$4" "${resume[@]}" ${TRAIN_ARGS:-}
  fi
}
step "4/8 tiny VAE stand-in";  train vae configs/tiny/vae.yaml    "$WORK/init"        "$WORK/vae"
step "5/8 stage 1 (image)";    train 1   configs/tiny/stage1.yaml "$WORK/vae/model"   "$WORK/stage1"
step "6/8 stage 2 (video)";    train 2   configs/tiny/stage2.yaml "$WORK/stage1/model" "$WORK/stage2"
step "7/8 stage 3 (speed)";    train 3   configs/tiny/stage3.yaml "$WORK/stage2/model" "$WORK/stage3"

step "8/8 evaluation on held-out identities and sentences"
"${EMO[@]}" evaluate --set "$WORK/world" --split heldout_identity,heldout_sentence --model "$WORK/stage3/model" \
  --out "$WORK/eval" --steps 20
echo
echo "to ship it: rm -rf src/emoportrait/assets/default_model && cp -r $WORK/stage3/model src/emoportrait/assets/default_model"
