#!/usr/bin/env bash
# `make bench`: the standard benchmark scenarios of docs/BENCHMARKS.md, side
# by side in one run on this machine. Writes .data/bench/results.md.
#
# 1. ingress requests/s and p99 at 50 connections (wrk replaying requests
#    signed by `loadgen --emit`), against `nats bench js pub sync --dedup`
# 2. syncer events/s from a full stream (100,000 events, 10,000 members,
#    the ceiling benchmark's event mix; auth.users holds a confirmed account
#    for each member and 40,000 others, links and bans reset before each
#    run), one event per transaction and batched, batched at LOG_LEVEL=info
#    (as deployed) and warn, at this disk's flush and with a 1.5 ms flush
#    simulated (commit_delay), against the database's ceiling for the same
#    SQL (BenchmarkApplyBatchCeiling, median of 3: the syncer's own pool
#    constructor and session settings, batches of 1,024 from 4 clients,
#    auth.users holding 50,000 accounts), against the server named below
# 3. end-to-end latency at 1,000 events/s for 60 s (loadgen)
# 4. replay of 1,000,000 events
# 5. peak memory (VmHWM) of ingress and syncer
#
# Needs: PostgreSQL on 127.0.0.1:5432 (user postgres), wrk (apt-get install
# wrk); it builds nats-server and the nats CLI from the Go module proxy.
# Sizes can be lowered for a quick look: SYNC_EVENTS, REPLAY_EVENTS,
# E2E_SECONDS. The shell functions are in scripts/bench/lib.sh, which
# scripts/bench-before-after.sh shares.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=.data/bench
SYNC_EVENTS=${SYNC_EVENTS:-100000}
REPLAY_EVENTS=${REPLAY_EVENTS:-1000000}
E2E_SECONDS=${E2E_SECONDS:-60}
NATS_PORT=4290
INGRESS_ADDR=127.0.0.1:8090
INGRESS_OPS_ADDR=127.0.0.1:8092
SYNCER_ADDR=127.0.0.1:8091
ADMIN_URL="postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/portalsync_bench?sslmode=disable"
export NATS_URL="nats://127.0.0.1:$NATS_PORT"
export LOG_LEVEL=warn

command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install wrk)" >&2; exit 1; }
mkdir -p "$OUT"
rm -rf "$OUT/nats" "$OUT"/*.txt
make build >/dev/null
[ -x bin/nats ] || GOBIN="$PWD/bin" go install github.com/nats-io/natscli/nats@v0.5.0

BIN=bin
# shellcheck source=scripts/bench/lib.sh
. scripts/bench/lib.sh
trap stop_all EXIT

psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS portalsync_bench" -c "CREATE DATABASE portalsync_bench"
bin/syncer migrate 2>/dev/null
start_nats "$OUT/nats"
SECRET=$(bin/ingress genkey)
export PORTAL_WEBHOOK_SECRETS=$SECRET
URL="http://$INGRESS_ADDR/webhooks/portal"

# Every scenario starts with an empty event stream (they all take the
# subjects portal.member.>, so only one stream can exist at a time).
fresh_stream() { bin/nats -s "$NATS_URL" stream rm -f BENCH >/dev/null 2>&1 || true; }

echo "== 1. ingress throughput"
fresh_stream
start_ingress BENCH
bin/loadgen --emit "$OUT/requests.txt" --events 600000 --members 10000 --run-id wrk
size=$(head -1 "$OUT/requests.txt" | cut -f4 | wc -c)
wrk -t2 -c50 -d15s --latency -s scripts/bench/signed.lua "http://$INGRESS_ADDR" -- "$OUT/requests.txt" 2 | tee "$OUT/wrk.txt"
ING_RPS=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$OUT/wrk.txt")
ING_P99=$(awk '$1 == "99%" {print $2}' "$OUT/wrk.txt")
ING_NON2XX=$(awk '/Non-2xx/ {print $5}' "$OUT/wrk.txt")
env -u DATABASE_URL bin/loadgen --url "$URL" --duration 10s -c 50 --run-id lg1 | tee "$OUT/loadgen-ingress.txt"
LG_RPS=$(awk '/accepted\/s/ {print $(NF-1)}' "$OUT/loadgen-ingress.txt")
LG_P99=$(awk '$1 == "accept" {print $8}' "$OUT/loadgen-ingress.txt")
ING_HWM1=$(hwm_mb "$INGRESS_PID")
bin/nats -s "$NATS_URL" bench js pub sync bench.raw --clients 4 --msgs 200000 --size "$size" --dedup --create --storage file --no-progress | tee "$OUT/nats-bench-4.txt"
RAW4=$(awk '/aggregated stats/ {gsub(",", "", $(NF-4)); print $(NF-4)}' "$OUT/nats-bench-4.txt")
bin/nats -s "$NATS_URL" bench js pub sync bench.raw --clients 50 --msgs 200000 --size "$size" --dedup --create --storage file --no-progress | tee "$OUT/nats-bench-50.txt"
RAW50=$(awk '/aggregated stats/ {gsub(",", "", $(NF-4)); print $(NF-4)}' "$OUT/nats-bench-50.txt")
stop "$INGRESS_PID"

echo "== 2. syncer from a full stream ($SYNC_EVENTS events)"
fresh_stream
fill_stream BENCH "$SYNC_EVENTS"
add_accounts
declare -A SYNC_RATE SYNC_HWM
for run in 1:warn 1024:warn 1024:info; do
  batch=${run%:*} level=${run#*:}
  reset_tables
  start_syncer BENCH "bench-b$batch-$level" SYNCER_BATCH_SIZE=$batch LOG_LEVEL=$level
  wait_log "$SYNC_EVENTS" 900
  SYNC_RATE[$run]=$(log_rate)
  SYNC_HWM[$run]=$(hwm_mb "$SYNCER_PID")
  stop "$SYNCER_PID"
  echo "batch $batch, LOG_LEVEL=$level: ${SYNC_RATE[$run]} events/s"
done
# The same, 15 s each, with a slower commit flush simulated: commit_delay
# makes every commit wait 1.5 ms before flushing, like a cloud disk (pgx
# passes unknown URL parameters on as session settings).
declare -A SLOW_RATE
for batch in 1 1024; do
  reset_tables
  start_syncer BENCH "bench-slow-b$batch" SYNCER_BATCH_SIZE=$batch DATABASE_URL="$DATABASE_URL&commit_delay=1500&commit_siblings=0"
  sleep 15
  SLOW_RATE[$batch]=$(log_rate)
  stop "$SYNCER_PID"
  echo "batch $batch, 1.5 ms flush: ${SLOW_RATE[$batch]} events/s"
done
CEILS=$(TEST_DATABASE_URL="$ADMIN_URL" CLIENTS=4 BATCH=1024 go test -run '^$' -bench BenchmarkApplyBatchCeiling -benchtime 100x -count 3 ./syncer/store/ | ceiling_rates)
CEIL=$(echo "$CEILS" | median)
echo "ceiling: $CEIL events/s (median of $(echo $CEILS | tr ' ' '/'))"

echo "== 3. end to end at 1,000 events/s for ${E2E_SECONDS}s"
reset_tables
fresh_stream
start_ingress BENCH
start_syncer BENCH bench-e2e
bin/loadgen --url "$URL" --rate 1000 --duration "${E2E_SECONDS}s" -c 50 --members 10000 --database-url "$DATABASE_URL" --run-id e2e | tee "$OUT/e2e.txt"
E2E=$(awk '$1 == "end-to-end" {print $4, $6, $8, $10}' "$OUT/e2e.txt")
ACC=$(awk '$1 == "accept" {print $4, $6, $8, $10}' "$OUT/e2e.txt")
ING_HWM3=$(hwm_mb "$INGRESS_PID")
SYN_HWM3=$(hwm_mb "$SYNCER_PID")
stop "$SYNCER_PID"
stop "$INGRESS_PID"

echo "== 4. replay of $REPLAY_EVENTS events"
fresh_stream
start_ingress BENCH
env -u DATABASE_URL bin/loadgen --url "$URL" --events "$REPLAY_EVENTS" -c 64 --members 10000 --orgs 20 --run-id r4 | tee "$OUT/fill-replay.txt"
stop "$INGRESS_PID"
reset_tables
start_s=$(date +%s.%N)
STREAM_NAME=BENCH bin/syncer replay --all | tee "$OUT/replay.txt"
REPLAY_S=$(echo "$(date +%s.%N) - $start_s" | bc)
REPLAY_RATE=$(awk '/^rate:/ {print $2}' "$OUT/replay.txt")

cpu=$(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//')
cat >"$OUT/results.md" <<EOF
Run $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores ($cpu), $(free -g | awk '/Mem:/ {print $2}') GiB,
PostgreSQL $(psql "$ADMIN_URL" -tAc 'SHOW server_version' | awk '{print $1}') (synchronous_commit=$(psql "$ADMIN_URL" -tAc 'SHOW synchronous_commit')),
nats-server $(bin/nats-server --version | awk '{print $2}'), event size $size bytes.
Settings: LOG_LEVEL=warn unless a row says info; INGRESS_RATE_LIMIT=0 (off);
plan_cache_mode $(psql "$ADMIN_URL" -tAc 'SHOW plan_cache_mode') (the syncer sets none); syncer defaults otherwise
(SYNCER_BATCH_SIZE 1024 unless a row says 1, 4 workers, GOGC 400); syncer rows 2 use
the ceiling's event mix ($CEILING_MIX) over 10,000 members and 20 organizations,
with 50,000 accounts in auth.users.

| # | scenario | measured | reference | ratio |
|---|---|---|---|---|
| 1 | ingress, wrk, 50 connections | $ING_RPS req/s, p99 $ING_P99 (non-2xx: ${ING_NON2XX:-0}) | raw JetStream sync publish with ids: $RAW4 msg/s (4 clients), $RAW50 msg/s (50 clients) | $(ratio "$ING_RPS" "$RAW4") of 4-client raw |
| 1 | ingress, loadgen, 50 connections | $LG_RPS req/s, p99 $LG_P99 | (load generator shares the CPU) | |
| 2 | syncer, one event per transaction, LOG_LEVEL=warn | ${SYNC_RATE[1:warn]} events/s | | |
| 2 | syncer, one event per transaction, 1.5 ms flush, warn | ${SLOW_RATE[1]} events/s | | |
| 2 | syncer, batched (1024), 1.5 ms flush, warn | ${SLOW_RATE[1024]} events/s | | |
| 2 | syncer, batched (1024), LOG_LEVEL=warn | ${SYNC_RATE[1024:warn]} events/s | ceiling, same SQL straight to PostgreSQL (4 clients, batches of 1024, median of $(echo $CEILS | tr ' ' '/')): $CEIL events/s | $(ratio "${SYNC_RATE[1024:warn]}" "$CEIL") |
| 2 | syncer, batched (1024), LOG_LEVEL=info (deployed) | ${SYNC_RATE[1024:info]} events/s | the same ceiling | $(ratio "${SYNC_RATE[1024:info]}" "$CEIL") |
| 3 | end to end at 1,000 events/s, ${E2E_SECONDS} s | p50/p95/p99/max $E2E | accept p50/p95/p99/max $ACC | |
| 4 | replay of $REPLAY_EVENTS events | $(printf '%.1f' "$REPLAY_S") s, $REPLAY_RATE events/s | | |
| 5 | peak RSS | ingress ${ING_HWM1} MB (1), ${ING_HWM3} MB (3); syncer ${SYNC_HWM[1:warn]} MB (2, per event), ${SYNC_HWM[1024:info]} MB (2, batched, info), ${SYN_HWM3} MB (3) | | |
EOF
echo
cat "$OUT/results.md"
