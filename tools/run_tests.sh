#!/usr/bin/env bash
# The test command of the README: installs what is missing (tools/setup_env.sh), then runs the suite.
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh tests/test_ops -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
PY=${PYTHON:-python3}
exec "$PY" -m pytest -q -rs -p no:cacheprovider "${@:-tests}"
