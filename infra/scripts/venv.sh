#!/usr/bin/env bash
# Creates (once) one of the project's virtualenvs with its pinned Python tools:
#   venv.sh        -> .venv        (moto: infra/scripts/requirements.txt)
#   venv.sh tools  -> .venv-tools  (SAM CLI, cfn-lint and its Serverless Rules, cargo-lambda, zig:
#                                   tools-requirements.txt)
#   venv.sh scan   -> .venv-scan   (checkov: scan-requirements.txt, which says why it is apart)
# Re-runs pip only when the requirements file changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
case "${1:-moto}" in
  moto) venv="$root/.venv"; req="$root/infra/scripts/requirements.txt" ;;
  tools) venv="$root/.venv-tools"; req="$root/infra/scripts/tools-requirements.txt" ;;
  scan) venv="$root/.venv-scan"; req="$root/infra/scripts/scan-requirements.txt" ;;
  *) echo "usage: $0 [moto|tools|scan]" >&2; exit 2 ;;
esac
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
