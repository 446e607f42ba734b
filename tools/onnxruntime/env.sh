#!/usr/bin/env bash
# Print the path of a Python with onnxruntime and onnx, creating its virtualenv on first
# use: $1 (or $KENSA_ORT_VENV, default target/ort-venv). Versions are pinned in
# requirements.txt next to this script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec bash "$here/../pyenv.sh" "$here/requirements.txt" "${1:-${KENSA_ORT_VENV:-$here/../../target/ort-venv}}"
