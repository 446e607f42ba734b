#!/usr/bin/env bash
# Print the path of a Python with onnxruntime and onnx, creating its virtualenv on first
# use: $1 (or $KENSA_ORT_VENV, default target/ort-venv). Versions are pinned in
# requirements.txt next to this script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-${KENSA_ORT_VENV:-$here/../../target/ort-venv}}"
stamp="$venv/.requirements"
if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
  cp "$here/requirements.txt" "$stamp"
fi
echo "$venv/bin/python"
