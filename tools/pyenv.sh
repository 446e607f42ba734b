#!/usr/bin/env bash
# Print the path of a Python with the packages pinned in $1 (a requirements.txt),
# creating or refreshing its virtualenv $2 when the pins changed since it was made.
set -euo pipefail
requirements="$1"
venv="$2"
stamp="$venv/.requirements"
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
  cp "$requirements" "$stamp"
fi
echo "$venv/bin/python"
