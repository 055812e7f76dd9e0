#!/usr/bin/env bash
# Runs every fuzz target of the workspace for the given time each (default 1m).
# New inputs are minimized for at most 5 s (Go's default, 60 s, stalls the
# whole run while it minimizes).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-1m}
for dir in $(go list -m -f '{{.Dir}}'); do
  for pkg in $(cd "$dir" && go list ./...); do
    pdir=$(go list -f '{{.Dir}}' "$pkg")
    for target in $(grep -hoE '^func (Fuzz[A-Za-z0-9_]+)' "$pdir"/*_test.go 2>/dev/null | awk '{print $2}'); do
      echo "== $pkg $target ($fuzztime)"
      go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 5s "$pkg"
    done
  done
done
