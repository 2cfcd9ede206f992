#!/usr/bin/env bash
# Installs the Label Studio server and SDK that tests/test_label_studio_real.py runs our ML backend
# against, in their own virtual environment (never in ours: both pin numpy 2.2 / older OpenCV):
#   ${GSAM_LABEL_STUDIO_VENV:-$HOME/.cache/grounded-sam/label-studio-venv}
#   label-studio==1.23.2, label-studio-sdk==2.1.2 (what label-studio 1.23.2 asks for)
# and, in the venv, an empty Label Studio database with every migration applied
# ($VENV/grounded-sam/label_studio.sqlite3) that each test copies: migrating a new SQLite file
# takes Label Studio 40-100 s on 2 cores, starting on the copy ~7 s.
# Idempotent: returns at once when all that is there in those versions. The python that makes the
# venv is ${LABEL_STUDIO_PYTHON:-python3} (3.10 to 3.13).
set -euo pipefail
LS_VERSION=1.23.2
SDK_VERSION=2.1.2
VENV=${GSAM_LABEL_STUDIO_VENV:-$HOME/.cache/grounded-sam/label-studio-venv}
PY=${LABEL_STUDIO_PYTHON:-python3}
TEMPLATE=$VENV/grounded-sam/label_studio.sqlite3

installed() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$LS_VERSION" "$SDK_VERSION" <<'PYEOF' 2>/dev/null
import importlib.metadata as m, sys
ok = m.version("label-studio") == sys.argv[1] and m.version("label-studio-sdk") == sys.argv[2]
sys.exit(0 if ok else 1)
PYEOF
}

migrated_template() {  # Label Studio migrates a new database at every command; `version` does nothing else
  [ -s "$TEMPLATE" ] && return 0
  local tmp
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && env -u PYTHONPATH LABEL_STUDIO_BASE_DATA_DIR="$tmp/data" DATABASE_NAME="$tmp/label_studio.sqlite3" \
        SENTRY_DSN= FRONTEND_SENTRY_DSN= COLLECT_ANALYTICS=false LATEST_VERSION_CHECK=false \
        "$VENV/bin/label-studio" version >"$tmp/log" 2>&1); then
    tail -40 "$tmp/log" >&2
    rm -rf "$tmp"
    return 1
  fi
  mkdir -p "$(dirname "$TEMPLATE")"
  mv "$tmp/label_studio.sqlite3" "$TEMPLATE.part.$$" && mv "$TEMPLATE.part.$$" "$TEMPLATE"
  rm -rf "$tmp"
}

if installed && [ -s "$TEMPLATE" ]; then
  echo "label-studio $LS_VERSION and label-studio-sdk $SDK_VERSION already installed in $VENV"
  exit 0
fi
start=$(date +%s)
if ! installed; then
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "label-studio==$LS_VERSION" "label-studio-sdk==$SDK_VERSION"
  installed || { echo "error: label-studio $LS_VERSION / label-studio-sdk $SDK_VERSION not importable in $VENV" >&2; exit 1; }
  echo "label-studio $LS_VERSION installed in $VENV in $(( $(date +%s) - start )) s"
fi
migrated_template || { echo "error: Label Studio could not migrate an empty database (log above)" >&2; exit 1; }
echo "label-studio ready in $VENV after $(( $(date +%s) - start )) s ($(du -sh "$VENV" | cut -f1))"
