#!/usr/bin/env bash
# Regenerate the checked-in V4L2 bindings (firmware/v4l2-sys/src/{x86_64,aarch64}.rs)
# from this machine's kernel headers. Needs libclang-dev and libc6-dev-arm64-cross
# (`bash .ci/deps`). The same test, without the variable, checks them in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
KENSA_REGENERATE_BINDINGS=1 cargo test -p v4l2-sys-mit --test bindings
git status --short firmware/v4l2-sys/src
