#!/usr/bin/env bash
# Builds the checkov tool venv used by tests/infra/test_checkov.py and CI, apart from .venv because
# checkov's own dependency pins clash with the project's. Idempotent and quick once built (a stamp
# names the pinned versions); safe when two test runs call it at once (flock).
#
#   scripts/checkov-venv.sh            # prints the venv's checkov path
#
# checkov pins pycep-parser 0.5.1, whose Bicep grammar predates `extension` (used by
# infra/app/graph-app.bicep), nullable types and `??`; with it checkov reports those files as
# parsing errors and checks nothing in them. pycep-parser 0.7.1 keeps the same API, so it is
# installed over it on purpose (pip check will name the mismatch).
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VERSION=3.3.30
PYCEP_VERSION=0.7.1
VENV=${CHECKOV_VENV:-.cache/checkov-venv}
STAMP="$VENV/.installed-checkov-$CHECKOV_VERSION-pycep-$PYCEP_VERSION"
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if [ ! -f "$STAMP" ]; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "pycep-parser==$PYCEP_VERSION" >&2
  touch "$STAMP"
fi
echo "$VENV/bin/checkov"
