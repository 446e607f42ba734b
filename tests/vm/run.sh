#!/usr/bin/env bash
# Hardware-in-the-loop stage: boot Debian's arm64 kernel in an emulated VM (qemu TCG,
# cortex-a72), with real V4L2 and GPIO drivers, and run the cross-built kensa-fw there
# against them (tests/vm/guest.sh). Usage:
#   tests/vm/run.sh <aarch64 kensa-fw> <aarch64 hil>
# Results (per-scenario JSON, daemon logs, the guest's log) go to $KENSA_VM_OUT
# (default target/vm). Exit status: the guest's.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
fw="$1"; hil="$2"
vm="$(bash "$here/prepare.sh")"
out="${KENSA_VM_OUT:-$here/../../target/vm}"
rm -rf "$out"; mkdir -p "$out"
cp "$fw" "$out/kensa-fw"; cp "$hil" "$out/hil"
cp "$here/guest.sh" "$out/"
cp "$here/../../models/demo_brushed_metal.kpkg" "$out/model.kpkg"
# Inference in an emulated CPU is ~100x slower than on a box: the belt is slowed to
# match (a part every SPACING_MS, the pusher DELAY_MS after the photo-eye). What the
# stage checks is the drivers, the order and the window of every pulse, not speed.
cat > "$out/vm.env" <<ENV
DELAY_MS=${KENSA_VM_DELAY_MS:-30000}
SPACING_MS=${KENSA_VM_SPACING_MS:-20000}
SLACK_MS=${KENSA_VM_SLACK_MS:-1500}
ENV
started=$(date +%s)
set +e
timeout "${KENSA_VM_TIMEOUT:-900}" qemu-system-aarch64 -M virt -cpu cortex-a72 -m 1024 -smp 2 \
  -nographic -no-reboot -nic none -kernel "$vm/Image" -initrd "$vm/initrd.gz" \
  -append 'console=ttyAMA0 panic=-1 quiet' \
  -virtfs "local,path=$out,mount_tag=host,security_model=none,id=host" > "$out/console.log" 2>&1
qemu=$?
set -e
echo "vm: qemu exited ($qemu) after $(( $(date +%s) - started )) s; results in $out"
cat "$out/guest.log" 2>/dev/null || { echo "vm: the guest wrote no log; console:"; tail -30 "$out/console.log"; }
rc=$(cat "$out/guest.rc" 2>/dev/null || echo 1)
exit "$rc"
