#!/usr/bin/env bash
# The tests: set up (venv, ComfyUI when reachable), then pytest. No tests collected is a failure.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
cd "$REPO"
set +e
"${WAN4STEP_VENV:-$REPO/.venv}/bin/python" -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "scripts/test.sh: pytest collected no tests; failing on purpose" >&2
  exit 1
fi
exit "$rc"
