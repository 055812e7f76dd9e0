#!/usr/bin/env bash
# `make run`: everything portalsync needs on one machine, in the foreground.
#  - NATS: unless NATS_URL is set, a current nats-server built from the Go
#    module (bin/nats-server), JetStream storing under ./.data/nats, on port
#    PORTALSYNC_NATS_PORT (default 4223, so it does not clash with an older
#    system nats-server on 4222), with the settings of deploy/nats/nats.conf
#    (every write synced to disk before it is acknowledged), or of the file
#    PORTALSYNC_NATS_CONFIG names.
#  - PostgreSQL: DATABASE_URL, else the database "portalsync" (created when
#    missing) of what bin/devpg finds: the local server at
#    127.0.0.1:$PGPORT (default 5432); else, where Docker answers, a
#    postgres:15 container; else a private cluster under ./.data/pg made with
#    PostgreSQL's server binaries (PGBIN, pg_config --bindir,
#    /usr/lib/postgresql/*/bin or PATH). The last two listen on 127.0.0.1:
#    PORTALSYNC_PG_PORT (54329) and are stopped on exit. Migrated by
#    `syncer migrate`.
#  - A webhook secret: PORTAL_WEBHOOK_SECRETS, or one generated once into
#    ./.data/webhook-secret.
#  - Ports are settings: PORTALSYNC_NATS_PORT (4223), INGRESS_ADDR
#    (127.0.0.1:8080, webhooks), INGRESS_OPS_ADDR (127.0.0.1:9080, the
#    ingress's /readyz and /metrics), SYNCER_HTTP_ADDR (127.0.0.1:8081). A
#    port in use is reported before anything starts.
#  - No load balancer in front: the ingress stops without a drain grace
#    (INGRESS_DRAIN_GRACE=0) unless it is set.
#  - What it chose is written to ./.data/env, which `make status`, `make dlq`,
#    `make replay` and `make send` read in a second terminal.
# Ctrl-C (or SIGTERM) stops everything gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .data

if [ -z "${PORTAL_WEBHOOK_SECRETS:-}" ]; then
  [ -s .data/webhook-secret ] || { bin/ingress genkey > .data/webhook-secret; chmod 600 .data/webhook-secret; }
  PORTAL_WEBHOOK_SECRETS=$(cat .data/webhook-secret)
  export PORTAL_WEBHOOK_SECRETS
fi

pids=()   # ingress and syncer
nats_pid=""
pg_up=""  # bin/devpg up ran: bin/devpg down stops what it started
cleanup() {
  trap - INT TERM EXIT
  # Services first, so they finish in-flight work against a live NATS.
  if [ ${#pids[@]} -gt 0 ]; then
    echo "stopping ingress and syncer..." >&2
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if [ -n "$nats_pid" ]; then
    kill -TERM "$nats_pid" 2>/dev/null || true
    wait "$nats_pid" 2>/dev/null || true
  fi
  if [ -n "$pg_up" ]; then
    bin/devpg down .data/pg || true
  fi
}
trap cleanup EXIT
trap 'exit 0' INT TERM

INGRESS_ADDR=${INGRESS_ADDR:-127.0.0.1:8080}
INGRESS_OPS_ADDR=${INGRESS_OPS_ADDR:-127.0.0.1:9080}
INGRESS_DRAIN_GRACE=${INGRESS_DRAIN_GRACE:-0}
SYNCER_HTTP_ADDR=${SYNCER_HTTP_ADDR:-127.0.0.1:8081}
export INGRESS_ADDR INGRESS_OPS_ADDR INGRESS_DRAIN_GRACE SYNCER_HTTP_ADDR

# port_free host:port setting: fails, naming the setting, when something
# already listens there.
port_free() {
  local host=${1%:*} port=${1##*:}
  [ -n "$host" ] || host=127.0.0.1
  if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
    echo "port $port ($1) is already in use: stop what listens there or set $2 to another address" >&2
    exit 1
  fi
}
port_free "$INGRESS_ADDR" INGRESS_ADDR
port_free "$INGRESS_OPS_ADDR" INGRESS_OPS_ADDR
port_free "$SYNCER_HTTP_ADDR" SYNCER_HTTP_ADDR
if [ -z "${NATS_URL:-}" ]; then
  port_free "127.0.0.1:${PORTALSYNC_NATS_PORT:-4223}" PORTALSYNC_NATS_PORT
fi

wait_port() { # host port what
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$3 did not come up on $1:$2" >&2
  exit 1
}

if [ -z "${NATS_URL:-}" ]; then
  port=${PORTALSYNC_NATS_PORT:-4223}
  nats_config=${PORTALSYNC_NATS_CONFIG:-deploy/nats/nats.conf}
  # testkit/natstest's TestMakeRunServerSyncsEveryWrite starts a server with
  # the arguments of the next line and reads its settings back.
  bin/nats-server -c "$nats_config" -a 127.0.0.1 -p "$port" -js -sd .data/nats >.data/nats.log 2>&1 &
  nats_pid=$!
  wait_port 127.0.0.1 "$port" nats-server
  export NATS_URL="nats://127.0.0.1:$port"
  echo "nats-server $(bin/nats-server --version | awk '{print $2}') with JetStream on $NATS_URL (settings: $nats_config, store: .data/nats, log: .data/nats.log)"
fi

if [ -z "${DATABASE_URL:-}" ]; then
  pg_up=1
  DATABASE_URL=$(bin/devpg up .data/pg)
  export DATABASE_URL
fi

bin/syncer migrate

bin/ingress serve &
pids+=($!)
bin/syncer run &
pids+=($!)

# Both must be listening before the banner: a clash that appeared since the
# check above, or any start-up error, ends here instead.
wait_up() { # host:port what pid
  local host=${1%:*} port=${1##*:}
  [ -n "$host" ] || host=127.0.0.1
  for _ in $(seq 1 100); do
    kill -0 "$3" 2>/dev/null || { echo "$2 exited at start (see its log above)" >&2; exit 1; }
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$2 did not listen on $1 within 10 s" >&2
  exit 1
}
wait_up "$INGRESS_ADDR" ingress "${pids[0]}"
wait_up "$INGRESS_OPS_ADDR" ingress "${pids[0]}"
wait_up "$SYNCER_HTTP_ADDR" syncer "${pids[1]}"

# The integration screen (bin/console), when Supabase Auth settings are
# given (SUPABASE_AUTH_URL and SUPABASE_JWT_SECRET or SUPABASE_JWKS_URL). Its
# database role can only SET ROLE authenticated (docs/ACCESS.md); on the
# local server it is made when missing.
if [ -n "${SUPABASE_AUTH_URL:-}" ]; then
  export CONSOLE_ADDR=${CONSOLE_ADDR:-127.0.0.1:8090} CONSOLE_HEALTH_ADDR=${CONSOLE_HEALTH_ADDR:-127.0.0.1:8091}
  if [ -z "${CONSOLE_DATABASE_URL:-}" ]; then
    psql "$DATABASE_URL" -qc "DO \$\$ BEGIN CREATE ROLE portalsync_screen LOGIN NOINHERIT IN ROLE portalsync_console; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$"
    export CONSOLE_DATABASE_URL="${DATABASE_URL/postgres@/portalsync_screen@}"
  fi
  bin/console serve &
  pids+=($!)
  wait_up "$CONSOLE_ADDR" console "${pids[2]}"
  echo "console:   http://$CONSOLE_ADDR (sign in with a Supabase Auth account of an org admin or coordinator)" >&2
fi

# For the second terminal: make status, make dlq, make replay, make send.
umask 077
cat > .data/env <<ENV
NATS_URL=$NATS_URL
DATABASE_URL=$DATABASE_URL
INGRESS_ADDR=$INGRESS_ADDR
INGRESS_OPS_ADDR=$INGRESS_OPS_ADDR
SYNCER_HTTP_ADDR=$SYNCER_HTTP_ADDR
SYNCER_URL=http://$SYNCER_HTTP_ADDR
ENV
for v in STREAM_NAME SYNCER_CONSUMER SYNCER_DEAD_LETTER_STREAM; do
  [ -z "${!v:-}" ] || echo "$v=${!v}" >> .data/env
done

cat >&2 <<MSG

portalsync is running.
  webhooks:  POST http://$INGRESS_ADDR/webhooks/portal
  health:    http://$INGRESS_OPS_ADDR/readyz  http://$SYNCER_HTTP_ADDR/readyz
  metrics:   http://$INGRESS_OPS_ADDR/metrics  http://$SYNCER_HTTP_ADDR/metrics
  send one:  make send        (or: PORTAL_WEBHOOK_SECRETS=\$(cat .data/webhook-secret) bin/ingress send --help)
  inspect:   make status   make dlq   make replay ARGS="--all --dry-run"   (they read .data/env)
  stop:      Ctrl-C

MSG
# Stop everything when one process ends.
wait -n "${pids[@]}"
