#!/usr/bin/env bash
# `make run`: everything portalsync needs on one machine, in the foreground.
#  - NATS: unless NATS_URL is set, a current nats-server built from the Go
#    module (bin/nats-server), JetStream storing under ./.data/nats, on port
#    PORTALSYNC_NATS_PORT (default 4223, so it does not clash with an older
#    system nats-server on 4222).
#  - PostgreSQL: DATABASE_URL, default the local server's database
#    "portalsync" (created when missing), migrated by `syncer migrate`.
#  - A webhook secret: PORTAL_WEBHOOK_SECRETS, or one generated once into
#    ./.data/webhook-secret.
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
}
trap cleanup EXIT
trap 'exit 0' INT TERM

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
  bin/nats-server -a 127.0.0.1 -p "$port" -js -sd .data/nats >.data/nats.log 2>&1 &
  nats_pid=$!
  wait_port 127.0.0.1 "$port" nats-server
  export NATS_URL="nats://127.0.0.1:$port"
  echo "nats-server $(bin/nats-server --version | awk '{print $2}') with JetStream on $NATS_URL (store: .data/nats, log: .data/nats.log)"
fi

if [ -z "${DATABASE_URL:-}" ]; then
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/portalsync?sslmode=disable"
  if command -v psql >/dev/null; then
    admin="postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    if [ "$(psql "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = 'portalsync'")" != "1" ]; then
      psql "$admin" -qc "CREATE DATABASE portalsync"
      echo "created database portalsync"
    fi
  fi
fi

bin/syncer migrate

INGRESS_ADDR=${INGRESS_ADDR:-127.0.0.1:8080} bin/ingress serve &
pids+=($!)
SYNCER_HTTP_ADDR=${SYNCER_HTTP_ADDR:-127.0.0.1:8081} bin/syncer run &
pids+=($!)

cat >&2 <<MSG

portalsync is running.
  webhooks:  POST http://${INGRESS_ADDR:-127.0.0.1:8080}/webhooks/portal
  health:    http://${INGRESS_ADDR:-127.0.0.1:8080}/readyz  http://${SYNCER_HTTP_ADDR:-127.0.0.1:8081}/readyz
  send one:  make send        (or: PORTAL_WEBHOOK_SECRETS=\$(cat .data/webhook-secret) bin/ingress send --help)
  stop:      Ctrl-C

MSG
# Stop everything when one process ends.
wait -n "${pids[@]}"
