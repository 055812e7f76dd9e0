#!/usr/bin/env bash
# `make send`: post a signed sample membership-created event to the ingress
# that `make run` started, then show what the syncer wrote. Arguments are
# passed to `ingress send` (e.g. make send ARGS="--type role-updated --role coordinator").
set -euo pipefail
cd "$(dirname "$0")/.."
# What `make run` chose (ports, URLs); the environment wins.
if [ -f .data/env ]; then
  while IFS='=' read -r k v; do [ -n "${!k:-}" ] || export "$k=$v"; done < .data/env
fi
if [ -z "${PORTAL_WEBHOOK_SECRETS:-}" ]; then
  [ -s .data/webhook-secret ] || { echo "no .data/webhook-secret: start 'make run' first, or set PORTAL_WEBHOOK_SECRETS" >&2; exit 1; }
  PORTAL_WEBHOOK_SECRETS=$(cat .data/webhook-secret)
  export PORTAL_WEBHOOK_SECRETS
fi
export INGRESS_URL=${INGRESS_URL:-http://${INGRESS_ADDR:-127.0.0.1:8080}/webhooks/portal}
bin/ingress send "$@"

db=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/portalsync?sslmode=disable}
if command -v psql >/dev/null; then
  sleep 0.5
  echo
  echo "profiles and memberships in PostgreSQL:"
  psql "$db" -c "SELECT p.portal_member_id, o.portal_org_id, p.status AS profile, m.status AS membership, r.role
                 FROM profiles p JOIN organization_memberships m ON m.profile_id = p.id
                 JOIN organizations o ON o.id = m.organization_id
                 LEFT JOIN role_assignments r ON r.profile_id = p.id AND r.organization_id = o.id
                 ORDER BY p.updated_at DESC LIMIT 5"
  echo "sync log:"
  psql "$db" -c "SELECT event_type, status, detail, processed_at FROM portal_sync_log ORDER BY id DESC LIMIT 5"
fi
