#!/usr/bin/env bash
# `make status`, `make dlq`, `make replay`: run a syncer command against what
# `make run` started, reading the URLs it wrote to .data/env (the
# environment wins), so a second terminal needs nothing exported.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .data/env ]; then
  while IFS='=' read -r k v; do [ -n "${!k:-}" ] || export "$k=$v"; done < .data/env
else
  echo "no .data/env: start 'make run' first (or set DATABASE_URL and NATS_URL)" >&2
fi
exec bin/syncer "$@"
