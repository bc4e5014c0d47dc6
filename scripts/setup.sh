#!/usr/bin/env bash
# Create .venv and install raysft with its test tools. Idempotent: re-running after a change to
# pyproject.toml reinstalls; otherwise it returns in a second.
# On machines without an NVIDIA GPU the pinned CPU build of torch is installed first, so nothing
# pulls several GB of CUDA packages; with a GPU, pip picks the CUDA build that torch's range allows.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PY=.venv/bin/python
# Test services come from Debian's packages (nothing can be downloaded at test time): Chromium for the console's
# browser tests; PostgreSQL for the store tests (tests/service/pg_server.py; its server binaries live in
# /usr/lib/postgresql/<version>/bin, off PATH, so look there).
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's ${need[*]} (browser and PostgreSQL tests)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "[setup] warning: missing ${need[*]}; install them (apt-get) to run the browser and PostgreSQL tests" >&2
  fi
fi
stamp=.venv/.raysft-installed
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$PY" -m pip install -q --upgrade pip
if ! command -v nvidia-smi >/dev/null 2>&1 && ! "$PY" -c "import torch" 2>/dev/null; then
  echo "[setup] no NVIDIA GPU: installing the CPU build of torch 2.13.0 first"
  "$PY" -m pip install -q "torch==2.13.0"
fi
echo "[setup] installing raysft and its dependencies into .venv (first run: a few minutes)"
"$PY" -m pip install -q -e ".[test]"
echo "$want" > "$stamp"
