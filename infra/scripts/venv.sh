#!/usr/bin/env bash
# Creates (once) the project's virtualenv at .venv with the pinned Python tools.
# Re-runs pip only when the requirements file changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/.venv"
req="$root/infra/scripts/requirements.txt"
stamp="$venv/.requirements.stamp"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "setting up $venv (first use)" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
fi
if [ ! -f "$stamp" ] || ! cmp -s "$req" "$stamp"; then
  "$venv/bin/python" -m pip install --quiet -r "$req" >&2
  cp "$req" "$stamp"
fi
