#!/usr/bin/env bash
# tract against onnxruntime on the same graphs, interleaved so that both see the same
# machine state: for each round, package and thread count, `kensa bench --package`
# then `kensa_ort.py bench` on the graph the package holds. Prints one line per pair.
#
#   tools/onnxruntime/latency.sh IMAGES PACKAGE.kpkg...
#
# IMAGES: a folder of images (e.g. ../shared/datasets/magnetic_tile/test/good).
# Env: KENSA (default target/release/kensa), ROUNDS (2), RUNS (40), THREADS ("1 2").
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kensa="${KENSA:-$here/../../target/release/kensa}"
images="$1"
shift
python="$("$here/env.sh")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for pkg in "$@"; do
  "$kensa" inspect-package "$pkg" --extract-onnx "$work/$(basename "$pkg" .kpkg).onnx" > /dev/null
done
for round in $(seq "${ROUNDS:-2}"); do
  for pkg in "$@"; do
    onnx="$work/$(basename "$pkg" .kpkg).onnx"
    for t in ${THREADS:-1 2}; do
      tract=$("$kensa" bench --package "$pkg" --threads "$t" --runs "${RUNS:-40}" "$images" | awk '/p50/ {print $3}')
      ort=$(cd "$work" && "$python" "$here/kensa_ort.py" bench "$onnx" --threads "$t" --runs "${RUNS:-40}" \
        | "$python" -c 'import json, sys; print("%.2f" % json.load(sys.stdin)["p50_ms"])')
      ratio=$("$python" -c "print('%.2f' % ($tract / $ort))")
      echo "round $round  $(basename "$pkg")  threads $t  tract $tract ms  onnxruntime $ort ms  ratio $ratio"
    done
  done
done
