#!/usr/bin/env bash
# `make send`: post a signed event (by default a sample membership-created)
# to the ingress that `make run` started, then show what it did: its
# sync-log row and its member's rows. Arguments are passed to `ingress send`
# (e.g. make send ARGS="--type role-updated --role coordinator").
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
if ! out=$(bin/ingress send "$@"); then
  [ -z "$out" ] || printf '%s\n' "$out"
  exit 1
fi
printf '%s\n' "$out"
id=$(sed -n 's/.*"event_id": *"\([^"]*\)".*/\1/p' <<<"$out" | head -n1)

# What the event did: its sync-log row and its member's rows, once the
# syncer has logged it (milliseconds; a paused syncer holds it).
db=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/portalsync?sslmode=disable}
if [ -n "$id" ] && command -v psql >/dev/null; then
  q() { psql "$db" -X -q -v id="$id" "$@"; }
  logged=""
  for _ in $(seq 1 50); do
    logged=$(echo "SELECT 1 FROM portal_sync_log WHERE event_id = :'id' LIMIT 1" | q -tA)
    [ -z "$logged" ] || break
    sleep 0.2
  done
  echo
  if [ -z "$logged" ]; then
    echo "not applied within 10 s: see make status"
    exit 0
  fi
  q <<'SQL'
\echo sync log of this event:
SELECT event_type, status, detail, member_created FROM portal_sync_log WHERE event_id = :'id' ORDER BY id;
\echo its member now:
SELECT p.portal_member_id, o.portal_org_id, p.status AS profile, m.status AS membership, r.role
FROM profiles p JOIN organization_memberships m ON m.profile_id = p.id
JOIN organizations o ON o.id = m.organization_id
LEFT JOIN role_assignments r ON r.profile_id = p.id AND r.organization_id = o.id
WHERE p.portal_member_id IN (SELECT portal_member_id FROM portal_sync_log WHERE event_id = :'id')
ORDER BY o.portal_org_id;
SQL
fi
