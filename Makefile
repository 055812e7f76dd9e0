# portalsync: one Go workspace (go.work) with the modules pkg, schema, ingress,
# syncer, console, loadgen, e2e and testkit. Every target covers all of them.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
GO ?= go
# Every module's package pattern, e.g. /work/main/pkg/...
PKGS := $(shell $(GO) list -m -f '{{.Dir}}/...' 2>/dev/null)
MODDIRS := $(shell $(GO) list -m -f '{{.Dir}}' 2>/dev/null)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOTESTSUM := gotest.tools/gotestsum@v1.13.0
FUZZTIME ?= 1m
# The tests' command runs under devpg: where no PostgreSQL server answers
# (TEST_DATABASE_URL, 127.0.0.1:$PGPORT) and Docker does not either, it
# starts a private cluster under .data/pgtest for the run and stops it at
# the end.
WITH_PG := $(GO) run ./pkg/cmd/devpg test .data/pgtest --

.PHONY: help build run send status dlq replay test test-short lint fmt bench bench-go bench-reconcile bench-contract browser-deps fuzz soak tidy clean

help: ## Show this help (in colour on a terminal only).
	@if [ -t 1 ]; then on='\033[36m' off='\033[0m'; else on='' off=''; fi; \
	grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*?## "}; {printf "  %s%-12s%s %s\n", on, $$1, off, $$2}'

# Quiet: go build prints only errors, so send/status/dlq/replay show only
# their command's output.
build: ## Build bin/ingress, bin/syncer, bin/console, bin/loadgen, bin/nats-server and bin/devpg.
	@mkdir -p bin
	@$(GO) build -o bin/ingress ./ingress
	@$(GO) build -o bin/syncer ./syncer
	@$(GO) build -o bin/console ./console
	@$(GO) build -o bin/loadgen ./loadgen
	@$(GO) build -o bin/nats-server github.com/nats-io/nats-server/v2
	@$(GO) build -o bin/devpg ./pkg/cmd/devpg

run: build ## Run NATS (unless NATS_URL is set), migrate, ingress and syncer.
	./scripts/run.sh

send: build ## Post a signed sample event to the running ingress (see README).
	@./scripts/send.sh $(ARGS)

status: build ## `syncer status` against what `make run` started (reads .data/env).
	@./scripts/cli.sh status $(ARGS)

dlq: build ## `syncer dlq list` against what `make run` started; ARGS="redrive --all" to redrive.
	@./scripts/cli.sh dlq $(or $(ARGS),list)

replay: build ## `syncer replay $(ARGS)` against what `make run` started, e.g. ARGS="--all --dry-run".
	@./scripts/cli.sh replay $(ARGS)

# gotestsum runs go test and ends with the skipped tests (name and output,
# which holds the reason), the failures and "DONE N tests, M skipped, K
# failures"; its post-run command adds "summary: N passed, N failed, N
# skipped" (failed counts package build errors too). The exit status is go
# test's.
test: ## Run every test (race detector, fuzz seed corpora) in every module; ends with a summary.
	$(WITH_PG) $(GO) run $(GOTESTSUM) --format pkgname-and-test-fails --format-icons text --format-hide-empty-pkg \
	  --post-run-command 'bash -c "echo summary: $$((TESTS_TOTAL - TESTS_FAILED - TESTS_SKIPPED)) passed, $$((TESTS_FAILED + TESTS_ERRORS)) failed, $$TESTS_SKIPPED skipped"' \
	  -- -race -count=1 -timeout 20m $(PKGS)

test-short: ## Quick tests without the race detector.
	$(WITH_PG) $(GO) test -count=1 -short $(PKGS)

lint: ## gofmt, go vet and staticcheck over every module.
	@out=$$(gofmt -l $(MODDIRS)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)

fmt: ## Format all Go code.
	gofmt -w $(MODDIRS)

bench: build ## The benchmark scenarios of docs/BENCHMARKS.md (minutes; writes .data/bench/results.md).
	./scripts/bench.sh

bench-go: ## Run the Go benchmarks of every module.
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

bench-reconcile: ## The reconciler's full read of a 100,000-row fake portal (docs/BENCHMARKS.md; about a minute).
	$(GO) test -run '^$$' -bench BenchmarkFullRead100kRows -benchtime=1x -count=3 -benchmem ./syncer/reconcile/

bench-contract: ## The app contract's queries on 1,000,000 log rows (docs/BENCHMARKS.md; about a minute; writes .data/bench/contract.md).
	@mkdir -p .data/bench
	PORTALSYNC_BENCH_CONTRACT=1 BENCH_REPORT=$(CURDIR)/.data/bench/contract.md $(GO) test -count=1 -run '^TestContractBenchmark$$' -timeout 30m -v ./e2e/ 2>&1 | grep -v 'logger.go' | tail -80

browser-deps: ## Install axe-core for the browser tests (npm ci --prefix testkit/browser; chromium: apt-get install chromium).
	npm ci --prefix testkit/browser --no-audit --no-fund

fuzz: ## Run each fuzz target for FUZZTIME (default 1m).
	./scripts/fuzz.sh $(FUZZTIME)

tidy: ## go mod tidy in every module.
	@for d in $(MODDIRS); do (cd $$d && GOWORK=off $(GO) mod tidy) || exit 1; done

clean: ## Remove binaries and local run data.
	rm -rf bin .data

soak: ## Soak test: 20,000 events while the syncer is killed repeatedly (writes .data/soak.md).
	@mkdir -p .data
	PORTALSYNC_SOAK=1 SOAK_REPORT=$(CURDIR)/.data/soak.md $(GO) test -count=1 -run '^TestSoak$$' -timeout 30m -v ./e2e/ 2>&1 | grep -v 'logger.go' | tail -40
