#!/usr/bin/env bash
# Two revisions side by side, interleaved in one run on this machine
# (issue 20's "no figure gets worse"): the database's ceiling
# (BenchmarkApplyBatchCeiling, syncer/store) and `make bench`'s scenario 2
# at LOG_LEVEL=info (the syncer, batched, draining a full stream of
# SYNC_EVENTS events into tables, links and bans reset before each drain;
# its rate from the sync log's processed_at). Writes
# .data/bench/before-after/results.md: every run with the load average at
# its start, each side's median and after / before.
#
#   scripts/bench-before-after.sh [BEFORE [AFTER]]
#
# BEFORE defaults to a8365e1 (where issue 20 was filed), AFTER to HEAD:
# committed trees only (git archive), so uncommitted changes are not
# measured. Each revision is built in a temporary directory: its syncer
# and its syncer/store test binary; AFTER's also ingress, loadgen and
# nats-server. Each side drains into its own database
# (portalsync_ba_before, portalsync_ba_after), migrated by its own
# `syncer migrate` and holding the same accounts; the stream is filled
# once, through AFTER's ingress, and each drain reads all of it with a
# consumer of its own. nats-server runs with the shipped settings
# (deploy/nats/nats.conf of AFTER; NATS_CONFIG= for the server's defaults,
# as `make bench` runs). Each of ROUNDS rounds runs the ceiling of both
# and then the drain of both, BEFORE first in odd rounds and AFTER first
# in even ones, so that a drift of the machine's load does not favour one.
#
# The ceilings run on the same server, each in a database cloned from its
# revision's template, protected for the length of the run (below). The
# two drain databases stay for inspection; logs are in the same folder.
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres) and Go. Sizes can be
# lowered for a quick look: SYNC_EVENTS (100000), ROUNDS (3), BENCHTIME
# (100x: 100 batches of 1,024 per ceiling run, as `make bench`).
set -euo pipefail
cd "$(dirname "$0")/.."

BEFORE=${1:-${BEFORE:-a8365e1}}
AFTER=${2:-${AFTER:-HEAD}}
SYNC_EVENTS=${SYNC_EVENTS:-100000}
ROUNDS=${ROUNDS:-3}
BENCHTIME=${BENCHTIME:-100x}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-1800}
OUT=$PWD/.data/bench/before-after
# Ports apart from `make bench`'s, so the two can run on one machine.
NATS_PORT=4295
INGRESS_ADDR=127.0.0.1:8095
INGRESS_OPS_ADDR=127.0.0.1:8097
SYNCER_ADDR=127.0.0.1:8096
ADMIN_URL="postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
export NATS_URL="nats://127.0.0.1:$NATS_PORT"
export LOG_LEVEL=warn

declare -A REV DIR DB TPL
REV[before]=$(git rev-parse --short "$BEFORE^{commit}")
REV[after]=$(git rev-parse --short "$AFTER^{commit}")
if [ "$AFTER" = HEAD ] && [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "bench: the work tree has uncommitted changes; they are not measured (AFTER is HEAD, ${REV[after]})" >&2
fi
TMP=$(mktemp -d)
mkdir -p "$OUT"
rm -f "$OUT"/*.log "$OUT"/*.txt "$OUT/results.md"

# shellcheck source=scripts/bench/lib.sh
. scripts/bench/lib.sh
trap 'stop_all; release_templates; rm -rf "$TMP"' EXIT

# build side: that revision's tree and binaries under $TMP/side.
build() {
  local dir=$TMP/$1
  DIR[$1]=$dir
  mkdir -p "$dir/src" "$dir/bin"
  git archive "${REV[$1]}" | tar -x -C "$dir/src"
  echo "== building $1 (${REV[$1]})"
  (cd "$dir/src" && go build -o ../bin/syncer ./syncer && go test -c -o ../bin/store.test ./syncer/store/)
  if [ "$1" = after ]; then
    (cd "$dir/src" && go build -o ../bin/ingress ./ingress && go build -o ../bin/loadgen ./loadgen &&
      go build -o ../bin/nats-server github.com/nats-io/nats-server/v2)
  fi
  # The template database its ceiling clones: pgtest names it after
  # schematest's template name and the revision's schema.Fingerprint().
  mkdir -p "$dir/src/schema/benchfingerprint"
  printf '%s\n' 'package main' 'import ("fmt"; "github.com/likeperson/portalsync/schema")' \
    'func main() { fmt.Print(schema.Fingerprint()) }' >"$dir/src/schema/benchfingerprint/main.go"
  TPL[$1]=pgtpl_portalsync_$(cd "$dir/src" && go run ./schema/benchfingerprint)
}
# Building a template, pgtest drops the templates of other schema versions,
# and a8365e1's pgtest fails a run whose template is dropped under it: test
# runs of other checkouts on the same server would do that to either side,
# and the two sides would do it to each other at every run. A template
# database cannot be dropped, so each side's is marked one (IS_TEMPLATE)
# once built, for the length of the run; release_templates unmarks them,
# leaving them to pgtest's clean-up.
protect_template() { # side
  if [ -n "$(psql "$ADMIN_URL" -tAc "SELECT 1 FROM pg_database WHERE datname = '${TPL[$1]}'")" ]; then
    psql "$ADMIN_URL" -qc "ALTER DATABASE \"${TPL[$1]}\" IS_TEMPLATE true"
  fi
}
release_templates() {
  local side
  for side in "${!TPL[@]}"; do
    psql "$ADMIN_URL" -qc "ALTER DATABASE \"${TPL[$side]}\" IS_TEMPLATE false" >/dev/null 2>&1 || true
  done
}
# use side: the binaries and database of that side for what follows.
use() { BIN=${DIR[$1]}/bin DATABASE_URL=${DB[$1]}; }
load1() { cut -d' ' -f1 /proc/loadavg; }

build before
build after
for side in before after; do
  DB[$side]="postgres://postgres@127.0.0.1:5432/portalsync_ba_$side?sslmode=disable"
  psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS portalsync_ba_$side" -c "CREATE DATABASE portalsync_ba_$side"
  use "$side"
  DATABASE_URL=$DATABASE_URL "$BIN/syncer" migrate 2>>"$OUT/syncer.log"
  add_accounts
done

use after
NATS_SETTINGS=${NATS_CONFIG-deploy/nats/nats.conf of after}
start_nats "$TMP/nats" "${NATS_CONFIG-${DIR[after]}/src/deploy/nats/nats.conf}"
PORTAL_WEBHOOK_SECRETS=$("$BIN/ingress" genkey)
export PORTAL_WEBHOOK_SECRETS
echo "== filling the stream with $SYNC_EVENTS events"
fill_stream BENCH "$SYNC_EVENTS"

# Every run: "round|measure|side|load|events/s|outcomes", in run order.
RUNS=()
# ceiling_run side label benchtime: one BenchmarkApplyBatchCeiling run of
# side; its events/s in RATE. A run whose template was dropped under it
# before it was protected is repeated, up to three times.
ceiling_run() {
  local attempt run=$TMP/ceiling.out
  for attempt in 1 2 3; do
    protect_template "$1"
    (cd "${DIR[$1]}/src/syncer/store" &&
      TEST_DATABASE_URL="$ADMIN_URL" CLIENTS=4 BATCH=1024 "${DIR[$1]}/bin/store.test" -test.run '^$' \
        -test.bench BenchmarkApplyBatchCeiling -test.benchtime "$3") >"$run" 2>&1 || true
    { echo "== $2, $1 (${REV[$1]}), attempt $attempt"; cat "$run"; } >>"$OUT/ceiling.txt"
    RATE=$(ceiling_rates <"$run")
    if [ -n "$RATE" ]; then
      protect_template "$1"
      return
    fi
    grep -q 'template database .* does not exist' "$run" ||
      { echo "bench: the $1 ceiling failed (see $OUT/ceiling.txt)" >&2; exit 1; }
    echo "$2, ceiling, $1: its template database was dropped under it; again" >&2
  done
  echo "bench: the $1 ceiling failed three times (see $OUT/ceiling.txt)" >&2
  exit 1
}
ceiling() { # side round
  local load
  load=$(load1)
  ceiling_run "$1" "round $2" "$BENCHTIME"
  RUNS+=("$2|ceiling|$1|$load|$RATE|")
  echo "round $2, ceiling, $1: $RATE events/s (load $load)"
}
drain() { # side round
  local load rate outcomes
  use "$1"
  reset_tables
  echo "== round $2, $1 (${REV[$1]})" >>"$OUT/syncer.log"
  load=$(load1)
  start_syncer BENCH "ba-$1-$2" SYNCER_BATCH_SIZE=1024 LOG_LEVEL=info DATABASE_URL="$DATABASE_URL"
  wait_log "$SYNC_EVENTS" "$DRAIN_TIMEOUT"
  rate=$(log_rate)
  stop "$SYNCER_PID"
  # What the drain logged: every event succeeds or is skipped (superseded
  # by a newer one of its batch, so the split varies with the batches'
  # boundaries); a failed row means the drain measured something else.
  outcomes=$(sql "SELECT string_agg(status || ' ' || n, ', ' ORDER BY status) FROM (SELECT status, count(*) AS n FROM portal_sync_log GROUP BY status) AS s")
  RUNS+=("$2|drain|$1|$load|$rate|$outcomes")
  echo "round $2, drain, $1: $rate events/s (load $load; $outcomes)"
}
# Each side's template database, built (and protected) before the first
# measured run.
for side in before after; do ceiling_run "$side" warm-up 1x; done
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="before after"; else order="after before"; fi
  for measure in ceiling drain; do
    for side in $order; do "$measure" "$side" "$round"; done
  done
done

# rates measure side: that measure's events/s of that side, one a line,
# in round order.
rates() { printf '%s\n' "${RUNS[@]}" | awk -F'|' -v m="$1" -v s="$2" '$2 == m && $3 == s {print $5}'; }
# round_ratios measure: after / before of each round, "0.981 · 1.012 · …".
round_ratios() {
  paste -d' ' <(rates "$1" after) <(rates "$1" before) | awk '{printf "%s%.3f", (NR > 1 ? " · " : ""), $1 / $2}'
}
commit() { git log -1 --format='`%h` %cs %s' "${REV[$1]}"; }
cpu=$(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//')
{
  cat <<EOF
Run $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores ($cpu), PostgreSQL $(psql "$ADMIN_URL" -tAc 'SHOW server_version' | awk '{print $1}'),
nats-server $("${DIR[after]}/bin/nats-server" --version | awk '{print $2}') (settings: ${NATS_SETTINGS:-its defaults}).
- before: $(commit before)
- after: $(commit after)

Ceiling: BenchmarkApplyBatchCeiling of each revision's syncer/store, -test.benchtime $BENCHTIME
(batches of 1,024 from 4 clients).
Drain: the syncer (SYNCER_BATCH_SIZE 1024, LOG_LEVEL=info) from a full stream of
$SYNC_EVENTS events in the ceiling's mix over 10,000 members, on its own revision's schema.
Load: the 1-minute load average when the run started.

| round | measure | revision | load | events/s | drain's log rows |
|---|---|---|---|---|---|
EOF
  for run in "${RUNS[@]}"; do
    IFS='|' read -r round measure side load rate outcomes <<<"$run"
    echo "| $round | $measure | $side \`${REV[$side]}\` | $load | $rate | $outcomes |"
  done
  echo
  echo "| measure | before, median (events/s) | after, median (events/s) | after / before, medians | after / before, each round |"
  echo "|---|---|---|---|---|"
  for measure in ceiling drain; do
    b=$(rates "$measure" before | median) a=$(rates "$measure" after | median)
    echo "| $measure | $b | $a | $(ratio "$a" "$b") | $(round_ratios "$measure") |"
  done
} >"$OUT/results.md"
echo
cat "$OUT/results.md"
