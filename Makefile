# orderly — the two commands a newcomer needs are `make run` and `make test`.
export GOTOOLCHAIN ?= local
GO      ?= go
BIN     ?= bin/orderly
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
ARGS    ?=

.PHONY: build run test test-short soak bench fleet-bench postgres promtool test-tools vet clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/orderly

# run starts the all-in-one server: embedded NATS, a managed PostgreSQL under
# ./data, the API on 127.0.0.1:8080 and a worker for this host.
run: postgres build
	./$(BIN) serve $(ARGS)

# postgres makes sure the PostgreSQL server binaries exist (installing the
# Debian package when we are root on a machine with apt-get).
postgres:
	@./scripts/ensure-postgres.sh

# The timeout is per package: cmd/orderly's fault scenarios take ~17
# minutes on a quiet two-core machine and 51 at a load average of 25.
# own-cgroup.sh gives the tests a cgroup of their own where they would run
# in the root one (the workers put orders in cgroups below theirs).
test: postgres promtool test-tools
	CI=true ./scripts/own-cgroup.sh $(GO) test -count=1 -timeout 90m ./...

# test-tools makes sure the tools some tests drive exist, installing their
# Debian packages when we are root on a machine with apt-get: systemd's
# (the units' verify, socket activation), a systemd user manager with
# dbus and polkitd (actions), Chromium (the web UI), pgbouncer (workers
# behind a transaction pooler). Under CI=true a test whose tool is missing
# fails, so a fresh machine needs them all.
test-tools:
	@./scripts/ensure-systemd.sh
	@./scripts/ensure-dbus.sh
	@./scripts/ensure-chromium.sh
	@./scripts/ensure-pgbouncer.sh

# promtool checks deploy/prometheus/ in the tests; taken from Debian's
# prometheus package into bin/ when missing.
promtool:
	@./scripts/ensure-promtool.sh

# soak runs the fault-injection suite's long restart storm (10 minutes of
# workers killed and restarted, nats-server and PostgreSQL crashes) and 15
# stream-leader kills on a 3-node NATS cluster, on top of the scenarios
# `make test` runs; see docs/reliability.md.
soak: postgres
	ORDERLY_SOAK=1 CI=true ./scripts/own-cgroup.sh $(GO) test -count=1 -timeout 30m -v -run 'TestFaultsSoak|TestFaultsNATSCluster' ./cmd/orderly/

# fleet-bench measures orderly with 100 and 1,000 simulated hosts in one
# `orderly fleet-sim` process (startup, idle load, memory per host, a fan-out
# to every host, submit throughput); see docs/benchmarks.md, "Fleet".
fleet-bench: postgres
	ORDERLY_FLEET=$${ORDERLY_FLEET:-100,1000} CI=true ./scripts/own-cgroup.sh $(GO) test -count=1 -timeout 60m -v -run 'TestFleetScale' ./cmd/orderly/

vet:
	$(GO) vet ./...

bench: postgres build
	@./scripts/ensure-webhook.sh
	$(GO) run ./cmd/orderly-bench -bin ./$(BIN) $(BENCH_ARGS)

clean:
	rm -rf bin
