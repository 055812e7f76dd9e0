# Shell functions shared by scripts/bench.sh (`make bench`) and
# scripts/bench-before-after.sh; sourced, not run. The sourcing script sets:
#   OUT              where logs go
#   BIN              the directory holding ingress, syncer, loadgen and
#                    nats-server
#   DATABASE_URL     the benchmark database (sql, reset_tables, log_*)
#   NATS_URL         the nats-server start_nats starts (its port)
#   INGRESS_ADDR, INGRESS_OPS_ADDR, SYNCER_ADDR   the services' addresses
#   PORTAL_WEBHOOK_SECRETS   before fill_stream
# Every process started here is added to pids; stop_all (the sourcing
# script's EXIT trap) stops them.

pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
hwm_mb() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "bench: nothing listens on port $1" >&2; exit 1; }
wait_http() { for _ in $(seq 1 100); do curl -sf "http://$1/readyz" >/dev/null && return 0; sleep 0.1; done; echo "bench: $1 not ready" >&2; exit 1; }
sql() { psql "$DATABASE_URL" -tAqc "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
# median: the median of the numbers on standard input, one a line.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.0f", v[(NR + 1) / 2]; else printf "%.0f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# start_nats store_dir [config]: a nats-server with JetStream on NATS_URL's
# port, storing under store_dir, with the settings of config when given
# (the server's defaults otherwise).
start_nats() {
  local port=${NATS_URL##*:}
  rm -rf "$1"
  "$BIN/nats-server" ${2:+-c "$2"} -a 127.0.0.1 -p "$port" -js -sd "$1" >"$OUT/nats.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
}

# Empty tables, no links, no bans: every syncer run starts from the same
# state (account_links outlives a TRUNCATE of the public tables). The
# emptied tables are not vacuumed: a table vacuumed while empty is known
# to be empty, and plans cached then (the foreign-key checks' among them)
# scan it sequentially for the rest of the run; after a TRUNCATE its size
# is unknown until autovacuum analyzes it, and plans use indexes.
reset_tables() {
  sql "TRUNCATE organizations, profiles, organization_memberships, role_assignments, portal_sync_log, portalsync.account_links, portalsync.erased_members"
  sql "UPDATE auth.users SET banned_until = NULL WHERE banned_until IS NOT NULL" >/dev/null
  sql "DELETE FROM auth.sessions" >/dev/null
  sql "VACUUM auth.users" >/dev/null
}
# The ceiling benchmark's event mix (pkg syncer/store, bench_test.go), so
# that the syncer and its ceiling do the same work.
CEILING_MIX=created=2,updated=1,role=1,deactivated=1,reactivated=1
log_count() { sql "SELECT count(*) FROM portal_sync_log"; }
# Events per second between the first and the last processed_at.
log_rate() { sql "SELECT round(count(*) / extract(epoch FROM max(processed_at) - min(processed_at)))::int FROM portal_sync_log"; }
wait_log() { # count timeout_s
  for _ in $(seq 1 $(($2 * 5))); do [ "$(log_count)" -ge "$1" ] && return 0; sleep 0.2; done
  echo "bench: only $(log_count) of $1 events applied in $2 s" >&2; exit 1
}
# ceiling_rates: the events/s of each BenchmarkApplyBatchCeiling result in
# the benchmark output on standard input, one a line.
ceiling_rates() { awk '/events\/s/ {for (i=1;i<=NF;i++) if ($(i+1) == "events/s") printf "%.0f\n", $i}'; }

start_ingress() { # stream
  STREAM_NAME=$1 INGRESS_ADDR=$INGRESS_ADDR INGRESS_OPS_ADDR=$INGRESS_OPS_ADDR INGRESS_DRAIN_GRACE=0 INGRESS_RATE_LIMIT=0 \
    "$BIN/ingress" serve >>"$OUT/ingress.log" 2>&1 &
  INGRESS_PID=$!
  pids+=($INGRESS_PID)
  wait_http "$INGRESS_OPS_ADDR"
}
start_syncer() { # stream consumer [env...]
  local stream=$1 consumer=$2
  shift 2
  env "$@" STREAM_NAME="$stream" SYNCER_CONSUMER="$consumer" SYNCER_HTTP_ADDR=$SYNCER_ADDR "$BIN/syncer" run >>"$OUT/syncer.log" 2>&1 &
  SYNCER_PID=$!
  pids+=($SYNCER_PID)
  wait_http "$SYNCER_ADDR"
}

# fill_stream stream events: scenario 2's stream, through the ingress:
# events events over 10,000 members (run id s2) and 20 organizations in
# the ceiling's mix. loadgen's report goes to $OUT/fill-sync.txt.
fill_stream() {
  start_ingress "$1"
  env -u DATABASE_URL "$BIN/loadgen" --url "http://$INGRESS_ADDR/webhooks/portal" --events "$2" -c 50 --members 10000 --orgs 20 \
    --mix "$CEILING_MIX" --run-id s2 | tee "$OUT/fill-sync.txt"
  stop "$INGRESS_PID"
}
# add_accounts: auth.users as in the ceiling benchmark: one account per
# member of fill_stream (loadgen's e-mails), confirmed, and 40,000
# unrelated ones; in statements of 500 rows, as the account trigger takes
# a lock per e-mail.
add_accounts() {
  for from in $(seq 0 500 49999); do
    sql "INSERT INTO auth.users (id, aud, role, email, email_confirmed_at)
         SELECT gen_random_uuid(), 'authenticated', 'authenticated',
                CASE WHEN i < 10000 THEN 's2-m' || i ELSE 'u' || i END || '@example.invalid', now()
         FROM generate_series($from, $from + 499) AS i" >/dev/null
  done
}
