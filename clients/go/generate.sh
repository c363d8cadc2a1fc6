#!/bin/sh
# Generates sluicepb/ from ../../proto with the protoc-gen-go and
# protoc-gen-go-grpc versions go.mod pins as tools. PROTOC names protoc
# (default: protoc on PATH); OUT the folder to write (default sluicepb).
set -eu
cd "$(dirname "$0")"
out=${OUT:-sluicepb}
pkg=github.com/sluice-gateway/sluice/clients/go/sluicepb
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${PROTOC:-protoc}" -I ../../proto \
  --plugin=protoc-gen-go="$(go tool -n protoc-gen-go)" \
  --plugin=protoc-gen-go-grpc="$(go tool -n protoc-gen-go-grpc)" \
  --go_out="$tmp" --go_opt=paths=source_relative --go_opt=Msluice/v1/gateway.proto=$pkg \
  --go-grpc_out="$tmp" --go-grpc_opt=paths=source_relative --go-grpc_opt=Msluice/v1/gateway.proto=$pkg \
  sluice/v1/gateway.proto
mkdir -p "$out"
cp "$tmp"/sluice/v1/*.go "$out"/
