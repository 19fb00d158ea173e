#!/usr/bin/env bash
# Installs the OpenMMLab stack pddr_mm is tested against into the active Python, then pddr_mm itself
# (editable). Idempotent: each step checks first, so a machine that has everything finishes in seconds.
# Why each step is the way it is: see docs/install.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0
MMCV_VERSION=2.1.0
MMENGINE_VERSION=0.10.7
MMDET_VERSION=3.3.0
MMPRETRAIN_VERSION=1.2.0

log() { echo "[setup_env] $*"; }
pip_() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }
# The machine-local wheel folder holds a CPU-only torch with no matching torchvision; the registry's
# own torch build (CUDA libraries included, runs on the CPU) pairs with the registry's torchvision.
pip_registry() {
  local cert=()
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cert=(--cert /etc/ssl/certs/ca-certificates.crt)
  PIP_CONFIG_FILE=/dev/null "$PY" -m pip --isolated install --disable-pip-version-check -q "${cert[@]}" "$@"
}

if "$PY" - <<PYEOF 2>/dev/null
import torch, torchvision
assert torch.__version__.split('+')[0] == '$TORCH_VERSION', torch.__version__
assert torchvision.__version__.split('+')[0] == '$TORCHVISION_VERSION', torchvision.__version__
torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
PYEOF
then log "torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION: present"
else
  log "installing torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION from the registry (a few minutes)"
  pip_registry --force-reinstall --no-deps "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
  pip_registry "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

if "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
  log "mmcv $MMCV_VERSION with compiled ops: present"
else
  # Only the source of mmcv 2.1.0 is on the registry: build its CPU ops against the installed torch
  # (about 8 minutes on 2 cores; pip caches the wheel, so a rebuild on the same machine takes seconds).
  # Its setup.py imports pkg_resources, which setuptools dropped in 81.
  log "building mmcv $MMCV_VERSION with its ops (about 8 minutes on 2 cores, cached afterwards)"
  pip_ "setuptools>=77.0.3,<81" wheel ninja
  MAX_JOBS=${MAX_JOBS:-$(nproc)} MMCV_WITH_OPS=1 pip_ --no-build-isolation "mmcv==$MMCV_VERSION"
fi

if "$PY" - <<PYEOF 2>/dev/null
import importlib.metadata as md
want = {'mmengine': '$MMENGINE_VERSION', 'mmdet': '$MMDET_VERSION', 'mmpretrain': '$MMPRETRAIN_VERSION'}
for name, version in want.items():
    assert md.version(name) == version, name
import pycocotools, matplotlib, mmdet.models, mmpretrain.models  # noqa
PYEOF
then log "mmengine $MMENGINE_VERSION, mmdet $MMDET_VERSION, mmpretrain $MMPRETRAIN_VERSION: present"
else
  log "installing mmengine, mmdet, mmpretrain, pycocotools"
  pip_ "mmengine==$MMENGINE_VERSION" "mmdet==$MMDET_VERSION" "mmpretrain==$MMPRETRAIN_VERSION" \
    pycocotools matplotlib
fi

# checked from another directory: the current one would shadow a missing install
if (here=$PWD; cd / && "$PY" -c "
import pathlib, pddr_mm
assert pathlib.Path(pddr_mm.__file__).resolve().parent == pathlib.Path('$here/pddr_mm').resolve()
" 2>/dev/null)
then log "pddr_mm (editable, this checkout): present"
else
  log "installing pddr_mm (editable)"
  pip_ --no-deps --no-build-isolation -e .
fi
if ! "$PY" -c "import pytest" 2>/dev/null; then pip_ pytest; fi
log "done"
