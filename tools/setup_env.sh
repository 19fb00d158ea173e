#!/usr/bin/env bash
# Makes the active Python a working pddr_mm environment, changing as little as possible: keeps every
# torch, torchvision, mmcv, mmengine, mmdet and mmpretrain that mmdet 3.3 / mmpretrain 1.2 support and
# that work (compiled ops included), and installs only what is missing. tools/misc/check_env.py (standard
# library only) inspects the environment and decides; this script carries the steps out. A machine that
# has everything finishes in seconds. Why each step is the way it is: docs/install.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

log() { echo "[setup_env] $*"; }
pip_() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }
# Only where there is no usable torch: the registry's own torch build (CUDA libraries included, runs on
# the CPU), which pairs with the registry's torchvision; machine-local pip configuration (wheel folders
# with a CPU-only torch and no matching torchvision) is bypassed for this step only.
pip_registry() {
  local cert=()
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cert=(--cert /etc/ssl/certs/ca-certificates.crt)
  PIP_CONFIG_FILE=/dev/null "$PY" -m pip --isolated install --disable-pip-version-check -q "${cert[@]}" "$@"
}
# mmcv 2.1 is on the registry as source only: its CPU ops (and CUDA ops where torch has CUDA and nvcc is
# there) build against the installed torch, about 8 minutes on 2 cores. Its setup.py imports
# pkg_resources, which setuptools dropped in 81.
build_mmcv() {
  pip_ "setuptools>=77.0.3,<81" wheel ninja
  MAX_JOBS=${MAX_JOBS:-$(nproc)} MMCV_WITH_OPS=1 pip_ --no-build-isolation "$@"
}

steps=$("$PY" tools/misc/check_env.py)  # its notes go to stderr; exits 2 (and so do we) if it cannot decide
changed=0
while read -r step args <&3; do  # fd 3: nothing a step runs can eat the list
  [ -n "$step" ] || continue
  changed=1
  read -r -a args <<< "$args"
  case "$step" in
    registry-torch)  # the pinned pair: replaces a broken torch as a whole, then fills in dependencies
      pip_registry --force-reinstall --no-deps "${args[@]}"
      pip_registry "${args[@]}" ;;
    torchvision)  # the release for the installed torch; torch==<installed> keeps pip from touching it
      pip_ "${args[@]}" ;;
    mmcv)  # pip's wheel cache makes a rebuild on the same machine take seconds
      build_mmcv "${args[@]}" ;;
    mmcv-rebuild)  # a cached wheel may be built for another torch: compile afresh
      build_mmcv --force-reinstall --no-deps --no-cache-dir "${args[@]}"
      pip_ "${args[@]}" ;;
    pip)
      pip_ "${args[@]}" ;;
    editable)
      pip_ --no-deps --no-build-isolation -e . ;;
    *) log "unknown step from check_env.py: $step"; exit 1 ;;
  esac
done 3<<< "$steps"

if [ "$changed" = 1 ]; then
  log "checking again"
  "$PY" tools/misc/check_env.py --verify
fi
log "done"
