#!/usr/bin/env bash
# The price of sync_interval: always and what group commit at the ingress
# wins back (docs/BENCHMARKS.md, "Durable publishes"), in one run on this
# machine. Two nats-server processes (the same build, file storage), one
# with `sync_interval: always` and one with the default policy; against
# each:
#
# 1. the ingress (server.Run over loopback HTTP, BenchmarkGroupCommit) with
#    grouping off (INGRESS_BATCH_MAX=1) and on (the defaults), 4, 50 and
#    200 senders, COUNT webhooks each
# 2. `nats bench js pub sync --dedup` and `nats bench js pub atomic --dedup
#    --batch 50` with 4 and 50 clients, MSGS messages of 287 B each
#
# ROUNDS times (3), to see the run-to-run spread on a shared machine.
# Writes .data/bench/sync-always/results.txt. Builds nats-server and the nats CLI
# (v0.5.1) from the Go module proxy into .data (nothing is committed).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=.data/bench/sync-always
BIN=$OUT/bin
COUNT=${COUNT:-20000}
MSGS=${MSGS:-20000}
mkdir -p "$BIN"
(cd pkg && go build -o "../$BIN/nats-server" github.com/nats-io/nats-server/v2)
GOFLAGS= GOBIN="$PWD/$BIN" go install github.com/nats-io/natscli/nats@v0.5.1

pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
start() { # name port sync-line
	rm -rf "$OUT/store-$1"
	printf 'listen: 127.0.0.1:%s\njetstream {\n  store_dir: "%s"\n  %s\n}\n' "$2" "$PWD/$OUT/store-$1" "$3" >"$OUT/$1.conf"
	"$BIN/nats-server" -c "$OUT/$1.conf" >"$OUT/$1.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 50); do
		"$BIN/nats" -s "nats://127.0.0.1:$2" server check jetstream >/dev/null 2>&1 && return
		sleep 0.2
	done
	echo "bench: nats-server $1 did not start:" >&2
	cat "$OUT/$1.log" >&2
	exit 1
}
start always 4297 'sync_interval: always'
start default 4298 ''

for round in $(seq "${ROUNDS:-3}"); do
	echo "# round $round: $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD), $(nproc) cores, $("$BIN/nats-server" --version), load $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "## ingress (BenchmarkGroupCommit, $COUNT webhooks per row)"
	BENCH_NATS_ALWAYS_URL=nats://127.0.0.1:4297 BENCH_NATS_DEFAULT_URL=nats://127.0.0.1:4298 \
		go test ./ingress/server -run '^$' -bench GroupCommit -benchtime "${COUNT}x" -count 1 2>&1 | grep -E '^Benchmark'
	for policy in always:4297 default:4298; do
		for clients in 4 50; do
			for kind in sync atomic; do
				echo "## nats bench js pub $kind, ${policy%%:*}, $clients clients"
				extra=()
				[ "$kind" = atomic ] && extra=(--batch 50)
				"$BIN/nats" -s "nats://127.0.0.1:${policy##*:}" bench js pub "$kind" bench.raw "${extra[@]}" \
					--clients "$clients" --msgs "$MSGS" --size 287 --dedup --create --purge --storage file --no-progress 2>&1 |
					grep -E 'aggregated stats|latencies per' || true
			done
		done
	done
done | tee "$OUT/results.txt"
