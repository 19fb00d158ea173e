#!/usr/bin/env bash
# The main job of the README, end to end on a CPU (or one GPU): set-up, data, training of the plain
# baseline and of the PD-B model on the same schedule, evaluation of both and of the fused PD-B model,
# their size, FLOPs and latency, the training curves of both on shared axes, and one summary table.
#   bash tools/run_demo.sh [CONFIG [WORK_DIR [BASELINE_CONFIG]]]
# defaults: CONFIG configs/demo/retinanet_r18-pdb_shapes.py, compared with BASELINE_CONFIG
# configs/demo/retinanet_r18-plain_shapes.py (another CONFIG: no baseline unless given; 'none' for none),
# all under WORK_DIR (work_dirs/demo; for another CONFIG work_dirs/demo/<config name>): one work dir per
# model (<WORK_DIR>/<config name>), curves.png, summary.md, benchmark.json.
# The demo classifier runs the same way, as a single model (its plain baseline untrained: latency and
# size only): bash tools/run_demo.sh configs/demo/pd-b-resnet18_shapes-cls.py
# Environment: DEMO_PARALLEL=0 trains the two models one after the other (default: side by side where
# there are 2 or more cores, each on one thread: the configs' cpu_threads=1); DEMO_SHAPE="H W" the
# input of the FLOPs / latency measurement (default 128 128, the demo images; 32 32 for *cls* configs);
# DEMO_BENCH_REPEAT timed repeats of the latency benchmark (default 200).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEFAULT_CONFIG=configs/demo/retinanet_r18-pdb_shapes.py
CONFIG=${1:-$DEFAULT_CONFIG}
NAME=$(basename "${CONFIG%.py}")
if [ "$CONFIG" = "$DEFAULT_CONFIG" ]; then
  WORK_DIR=${2:-work_dirs/demo}
  BASE=${3:-configs/demo/retinanet_r18-plain_shapes.py}
  LABEL=PD-B
else
  WORK_DIR=${2:-work_dirs/demo/$NAME}
  BASE=${3:-none}
  LABEL=$NAME
fi
[ "$BASE" = none ] && BASE=
PD_DIR=$WORK_DIR/$NAME
BASE_DIR=${BASE:+$WORK_DIR/$(basename "${BASE%.py}")}
case "$NAME" in *cls*) SHAPE=${DEMO_SHAPE:-32 32} ;; *) SHAPE=${DEMO_SHAPE:-128 128} ;; esac
NPROC=$(nproc 2>/dev/null || echo 1)
PARALLEL=${DEMO_PARALLEL:-$([ "$NPROC" -ge 2 ] && echo 1 || echo 0)}
DATA=data/shapes
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}  # mmengine's pkg_resources deprecation noise
start=$(date +%s)
step() { echo; echo "=== [run_demo $(( $(date +%s) - start ))s] $*"; }

step "1/6 environment (tools/setup_env.sh)"
bash tools/setup_env.sh

step "2/6 data: $DATA"
if [ -f "$DATA/annotations/instances_val.json" ]; then
  echo "present (delete $DATA to regenerate)"
else
  "$PY" tools/misc/generate_shapes_dataset.py --out "$DATA"
fi

# the last line of a training log that says where it is: epoch, iteration, loss, and the last validation
progress() {
  local log=$1 at val
  at=$(grep -o 'Epoch(train) *\[[0-9]*\]\[ *[0-9]*/[0-9]*\].* loss: [0-9.]*' "$log" 2>/dev/null | tail -n 1 \
    | sed -E 's/(\]\[ *[0-9]+\/[0-9]+\]).* (loss: [0-9.]+)$/\1 \2/' || true)
  val=$(grep -o 'coco/bbox_mAP: [0-9.]*\|accuracy/top1: [0-9.]*' "$log" 2>/dev/null | tail -n 1 || true)
  echo "  $(basename "$(dirname "$log")"): ${at:-starting}${val:+   last validation: $val}"
}

if [ -n "$BASE" ]; then
  step "3/6 training $BASE -> $BASE_DIR and $CONFIG -> $PD_DIR (same schedule; each evaluates the val split as it goes)"
else
  step "3/6 training $CONFIG -> $PD_DIR (evaluates the val split as it goes)"
fi
# --resume: running the demo again continues an interrupted training from its last checkpoint (a finished
# one is not trained again)
if [ -n "$BASE" ] && [ "$PARALLEL" = 1 ]; then
  # side by side, one thread each: on a 2-core machine about the time of the slower one alone
  mkdir -p "$BASE_DIR" "$PD_DIR"
  echo "training both side by side ($NPROC cores); full logs: $BASE_DIR/train.log, $PD_DIR/train.log"
  "$PY" tools/train.py "$BASE" --work-dir "$BASE_DIR" --resume >> "$BASE_DIR/train.log" 2>&1 &
  base_pid=$!
  "$PY" tools/train.py "$CONFIG" --work-dir "$PD_DIR" --resume >> "$PD_DIR/train.log" 2>&1 &
  pd_pid=$!
  trap 'kill "$base_pid" "$pd_pid" 2>/dev/null || true' INT TERM EXIT
  while kill -0 "$base_pid" 2>/dev/null || kill -0 "$pd_pid" 2>/dev/null; do
    sleep 30
    echo "[run_demo $(( $(date +%s) - start ))s]"
    progress "$BASE_DIR/train.log"
    progress "$PD_DIR/train.log"
  done
  failed=0
  for job in "$base_pid:$BASE_DIR" "$pd_pid:$PD_DIR"; do
    if ! wait "${job%%:*}"; then
      echo "training failed: the end of ${job#*:}/train.log:"; tail -n 40 "${job#*:}/train.log"; failed=1
    fi
  done
  trap - INT TERM EXIT
  [ "$failed" = 0 ] || exit 1
  progress "$BASE_DIR/train.log"
  progress "$PD_DIR/train.log"
else
  [ -z "$BASE" ] || "$PY" tools/train.py "$BASE" --work-dir "$BASE_DIR" --resume
  "$PY" tools/train.py "$CONFIG" --work-dir "$PD_DIR" --resume
fi
CKPT=$(cat "$PD_DIR/last_checkpoint")
BASE_CKPT=${BASE:+$(cat "$BASE_DIR/last_checkpoint")}

step "4/6 evaluating${BASE:+ the plain baseline,} the trained (unfused) model and the fused model"
if [ -n "$BASE" ]; then
  echo "--- plain baseline: $BASE_CKPT"
  "$PY" tools/test.py "$BASE" "$BASE_CKPT" --work-dir "$BASE_DIR/test"
fi
echo "--- unfused: every PDConv2d computes its branches (forward_path='branches' on every PDDR module)"
"$PY" - "$CONFIG" "$PD_DIR/config_unfused.py" <<'PYEOF'
import sys
from mmengine.config import Config
from pddr_mm.deployment import forward_path_model_cfg
cfg = Config.fromfile(sys.argv[1])
cfg.model = forward_path_model_cfg(cfg.model, 'branches')
cfg.dump(sys.argv[2])
PYEOF
"$PY" tools/test.py "$PD_DIR/config_unfused.py" "$CKPT" --work-dir "$PD_DIR/test_unfused"
echo "--- fused: every PDConv2d fused (PDDRDeployHook), checked against the unfused outputs on the first batch"
"$PY" tools/test.py "$CONFIG" "$CKPT" --deploy --work-dir "$PD_DIR/test_fused"

step "5/6 parameters, FLOPs and latency (batch 1, ${SHAPE/ /x}): plain, unfused and fused timed interleaved in one process"
# on one CPU thread, as the configs' cpu_threads=1 (on a shared CPU, OpenMP threads waiting on each other
# made these small models' latency erratic); OMP_NUM_THREADS set beforehand wins
# shellcheck disable=SC2086  # SHAPE is two numbers
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PY" tools/analysis_tools/benchmark.py "$CONFIG" --checkpoint "$CKPT" --batch-size 1 --shape $SHAPE \
  --repeat-num "${DEMO_BENCH_REPEAT:-200}" --num-warmup 20 --json "$WORK_DIR/benchmark.json"

step "6/6 plots: training curves${BASE:+ of both models} and PD-B branch weights"
if [ -n "$BASE" ]; then
  "$PY" tools/analysis_tools/compare_runs.py "$BASE_DIR" "$PD_DIR" --labels plain "$LABEL" \
    --out "$WORK_DIR/curves.png" || echo "(plotting failed; training and evaluation results stand)"
else
  "$PY" tools/analysis_tools/compare_runs.py "$PD_DIR" --labels "$LABEL" \
    --out "$WORK_DIR/curves.png" || echo "(plotting failed; training and evaluation results stand)"
fi
# the PD model's own curves (losses, learning rate, every metric) and its branch weights
"$PY" tools/analysis_tools/plot_curves.py "$PD_DIR" --config "$CONFIG" --checkpoint "$CKPT" \
  --out "$PD_DIR/curves.png" || echo "(plotting failed; training and evaluation results stand)"

step "summary"
"$PY" tools/misc/demo_summary.py "$WORK_DIR/benchmark.json" --name "$LABEL" \
  --unfused "$PD_DIR/test_unfused" --fused "$PD_DIR/test_fused" \
  ${BASE:+--baseline "$BASE_DIR/test" --baseline-config "$BASE" --baseline-name plain} \
  --train-dirs ${BASE:+"$BASE_DIR"} "$PD_DIR" --out "$WORK_DIR/summary.md" \
  --note "torch threads in the latency benchmark: OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}"
seconds=$(( $(date +%s) - start ))
echo "- demo wall time (set-up included): $((seconds / 60)) min $((seconds % 60)) s" | tee -a "$WORK_DIR/summary.md"
echo
echo "checkpoints:      ${BASE:+$BASE_CKPT }$CKPT"
echo "training logs:    ${BASE:+$BASE_DIR/<timestamp>/ }$PD_DIR/<timestamp>/  (vis_data/scalars.json: the curves)"
echo "test logs:        ${BASE:+$BASE_DIR/test }$PD_DIR/test_unfused $PD_DIR/test_fused"
echo "plots:            $WORK_DIR/curves.png (${BASE:+plain and PD-B: }loss and validation), $PD_DIR/curves_branch_weights.png"
echo "table:            $WORK_DIR/summary.md; latency details: $WORK_DIR/benchmark.json"
