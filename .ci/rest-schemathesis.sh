#!/usr/bin/env bash
# The REST shim against the real `agentry serve` on a fresh SQLite file: /openapi.json must validate
# (openapi-spec-validator), and schemathesis fuzzes every operation from that document for a bounded time,
# failing on any 5xx and on any response that breaks its own schema. Both tools come from PyPI and run as
# `python3 -m ...`, so nothing depends on where pip put its scripts.
#
# Left out of the fuzzing: RevokeApiKey (it would revoke the very key the run authenticates with, so every
# later call is a 401).
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: the versions this check was last seen green with. One worker: with two threads, hypothesis
# 6.170's lambda descriptions (ast.parse) hit CPython 3.11's "AST constructor recursion depth mismatch"
# race, a crash of the tool itself that has nothing to do with the API under test.
python3 -m pip install --quiet --disable-pip-version-check \
  schemathesis==4.32.5 hypothesis==6.170.15 openapi-spec-validator==0.9.0

tmp=$(mktemp -d)
KEY=$(cargo run -q --bin agentry -- keys generate)
AGENTRY_BOOTSTRAP_KEY=$KEY RUST_LOG=warn cargo run -q --bin agentry -- serve --grpc-addr 127.0.0.1:50598 \
  --http-addr 127.0.0.1:58598 --database-url "sqlite://$tmp/rest.db?mode=rwc" >"$tmp/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
BASE=http://127.0.0.1:58598
fetch() { python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"; }
for _ in $(seq 1 120); do fetch "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.5; done

fail() { echo "REST check FAILED: $*"; tail -50 "$tmp/server.log"; exit 1; }
fetch "$BASE/openapi.json" >"$tmp/openapi.json" || fail "GET /openapi.json"
python3 -m openapi_spec_validator "$tmp/openapi.json" || fail "openapi-spec-validator rejects /openapi.json"

python3 -m schemathesis.cli run "$BASE/openapi.json" \
  --header "authorization: Bearer $KEY" \
  --checks not_a_server_error,response_schema_conformance \
  --exclude-operation-id-regex 'RevokeApiKey' \
  --max-examples 10 --workers 1 --max-time 180 --request-timeout 30 \
  --seed 20261122 || fail "schemathesis found 5xx answers or schema violations (see above)"

grep -q "panicked" "$tmp/server.log" && fail "the server panicked"
kill -TERM $pid
wait $pid || fail "serve did not exit 0 on SIGTERM"
echo "REST schemathesis run passed"
