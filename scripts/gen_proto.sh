#!/usr/bin/env bash
# Regenerate the job service code from its .proto:  bash scripts/gen_proto.sh [OUT_DIR]
#
# Writes raysft/service/v1/jobs_pb2.py, jobs_pb2.pyi and jobs_pb2_grpc.py under OUT_DIR (default: the
# repository root, i.e. in place). Needs grpcio-tools and googleapis-common-protos (google/rpc/status.proto).
# tests/service/test_proto.py runs this into a temporary directory and fails when the committed files differ.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python; fi
fi
OUT="${1:-.}"
mkdir -p "$OUT"
# The directory that holds google/rpc/status.proto (shipped with googleapis-common-protos).
GOOGLEAPIS="$("$PY" -c 'import os, google.rpc.status_pb2 as m; print(os.path.dirname(os.path.dirname(os.path.dirname(m.__file__))))')"
# `python -m grpc_tools.protoc` adds the well-known types (google/protobuf/*.proto) itself.
"$PY" -m grpc_tools.protoc -I . -I "$GOOGLEAPIS" \
  --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
  raysft/service/v1/jobs.proto
echo "generated raysft/service/v1/jobs_pb2{.py,.pyi,_grpc.py} under $OUT"
