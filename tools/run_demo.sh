#!/usr/bin/env bash
# The main job of the README, end to end on a CPU (or one GPU): set-up, data, training, evaluation,
# fusion, evaluation of the fused model, plots, and a summary of where everything is.
#   bash tools/run_demo.sh [CONFIG] [WORK_DIR]
# defaults: configs/demo/retinanet_r18-pdb_shapes.py, work_dirs/demo/<config name>
# the demo classifier runs the same way: bash tools/run_demo.sh configs/demo/pd-b-resnet18_shapes-cls.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CONFIG=${1:-configs/demo/retinanet_r18-pdb_shapes.py}
NAME=$(basename "${CONFIG%.py}")
WORK_DIR=${2:-work_dirs/demo/$NAME}
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

step "3/6 training $CONFIG -> $WORK_DIR (evaluates the val split as it goes)"
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
CKPT=$(cat "$WORK_DIR/last_checkpoint")

step "4/6 evaluating the trained (unfused) model: every PDConv2d computes its branches"
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR/test_unfused" \
  --cfg-options model.backbone.forward_path=branches

step "5/6 fusing every PDConv2d (PDDRDeployHook) and evaluating the fused model"
"$PY" tools/test.py "$CONFIG" "$CKPT" --deploy --work-dir "$WORK_DIR/test_fused"

step "6/6 plots: training curves and PD-B branch weights"
"$PY" tools/analysis_tools/plot_curves.py "$WORK_DIR" --config "$CONFIG" --checkpoint "$CKPT" \
  --out "$WORK_DIR/curves.png" || echo "(plotting failed; training and evaluation results above stand)"

step "summary"
"$PY" - "$WORK_DIR" "$CKPT" "$(( $(date +%s) - start ))" <<'PYEOF'
import glob, json, os, sys
work_dir, ckpt, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])

def metrics(test_dir):
    # mmengine's LoggerHook writes the test metrics to <work_dir>/<timestamp>/<timestamp>.json
    files = sorted(glob.glob(os.path.join(test_dir, '*', '*.json')), key=os.path.getmtime)
    return json.load(open(files[-1])) if files else {}

unfused, fused = metrics(os.path.join(work_dir, 'test_unfused')), metrics(os.path.join(work_dir, 'test_fused'))
# detectors: COCO mAP at the usual thresholds; classifiers: every accuracy the evaluator reported
keys = [k for k in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75') if k in unfused] or \
    [k for k in unfused if k.startswith(('accuracy/', 'single-label/'))]
if not keys:
    sys.exit(f'no test metrics found under {work_dir}: see the test logs above')
print(f"{'metric':<20}{'unfused':>10}{'fused':>10}")
for k in keys:
    print(f"{k:<20}{unfused.get(k, float('nan')):>10.3f}{fused.get(k, float('nan')):>10.3f}")
same = all(unfused.get(k) == fused.get(k) for k in keys)
print('fused == unfused:', 'yes' if same else 'NO')
print('checkpoint:      ', ckpt)
print('training logs:   ', os.path.join(work_dir, '<timestamp>/  (vis_data/scalars.json holds the curves)'))
print('test logs:       ', os.path.join(work_dir, 'test_unfused'), os.path.join(work_dir, 'test_fused'))
print('plots:           ', os.path.join(work_dir, 'curves.png'), os.path.join(work_dir, 'curves_branch_weights.png'))
print(f'wall time:        {seconds // 60} min {seconds % 60} s')
PYEOF
