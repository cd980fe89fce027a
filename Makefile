# Targets people expect. `make test` is what CI runs (.ci/run).
GO       ?= go
PKGS     ?= ./...
FUZZTIME ?= 60s

.PHONY: run build test race fuzz bench lint deps soak

build:
	$(GO) build -ldflags "-X main.commitStamp=$$(git rev-parse --short HEAD 2>/dev/null)" -o bin/sessionproxy ./cmd/sessionproxy

# Proxy on 127.0.0.1:6380 in front of a Redis on 127.0.0.1:6379 (installed and started if missing).
run: deps build
	bash .ci/redis-local
	./bin/sessionproxy -listen 127.0.0.1:6380 -upstream 127.0.0.1:6379 -metrics 127.0.0.1:9380

deps:
	bash .ci/deps

# Lint, then every test with the race detector (real redis-server processes, real clients),
# the end-to-end packages again with client reads on Go's netpoller (client_reads: netpoller;
# the first run has the default, epoll),
# then the tests of the patched redcon copy and the alert rules' check with Prometheus' rule
# parser (modules of their own, so not in ./...).
test: deps lint
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	SESSIONPROXY_TEST_CLIENT_READS=netpoller $(GO) test -race -count=1 -timeout 15m ./proxy ./cmd/...
	cd third_party/redcon && $(GO) test -count=1 .
	cd deploy/prometheus/rulecheck && $(GO) test -count=1 .

race: test

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# Each fuzz target for FUZZTIME (findings land in testdata/fuzz and become table tests).
fuzz:
	$(GO) test ./internal/resp -run '^$$' -fuzz '^FuzzNormalizer$$' -fuzztime $(FUZZTIME)
	$(GO) test ./internal/resp -run '^$$' -fuzz '^FuzzAppendReply$$' -fuzztime $(FUZZTIME)
	$(GO) test ./proxy -run '^$$' -fuzz '^FuzzClientCommands$$' -fuzztime $(FUZZTIME)
	$(GO) test ./rewrite -run '^$$' -fuzz '^FuzzPlan$$' -fuzztime $(FUZZTIME)
	$(GO) test ./internal/resp -run '^$$' -fuzz '^FuzzReplyLen$$' -fuzztime $(FUZZTIME)
	$(GO) test ./reaper -run '^$$' -fuzz '^FuzzParseEntry$$' -fuzztime $(FUZZTIME)
	$(GO) test ./internal/resp -run '^$$' -fuzz '^FuzzConnChunks$$' -fuzztime $(FUZZTIME)
	$(GO) test ./internal/resp -run '^$$' -fuzz '^FuzzPollChunks$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10s

# Go micro-benchmarks; the redis-benchmark comparison is bench/run.sh (see bench/README.md).
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# A bounded soak (10 minutes, not in CI): 200 connections of mixed traffic through a private
# Redis and proxy; fails on index drift or client errors. DURATION=2m make soak for a short one.
soak: deps
	bash bench/soak.sh
