# Ferry developer commands. `make run` and `make test` come first; see README.md.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test lint fmt build test-deps

## Build and start all four services on an embedded SQLite database in ./.ferry
run:
	bash deploy/local/run.sh

## The whole suite, on PostgreSQL (throwaway cluster unless DATABASE_URL is set) and SQLite
test:
	bash tests/scripts/with-postgres.sh $(CARGO) nextest run --workspace --no-fail-fast

## Format check and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Optional test tools: pebble + pebble-challtestsrv and bind9's named (the ACME tests skip without them)
test-deps:
	{ command -v pebble && test -x /usr/sbin/named; } >/dev/null || { apt-get install -y -qq pebble bind9 || { apt-get update -qq && apt-get install -y -qq pebble bind9; }; }

build:
	$(CARGO) build --workspace --bins

.PHONY: bench-proxy
## ferry-proxy vs nginx vs the bare upstream with wrk (installs wrk + nginx-light if missing)
bench-proxy:
	bash crates/proxy/bench/run.sh

.PHONY: bench-proxy-instr
# Instructions per request under callgrind, ferry-proxy vs nginx: the
# repeatable comparison (wall-clock numbers swing on a shared 2-core VM).
bench-proxy-instr:
	bash crates/proxy/bench/instr.sh

.PHONY: bench-proxy-cpu
## CPU time per request, ferry-proxy vs nginx, one instance each with 10,001 routes
bench-proxy-cpu:
	bash crates/proxy/bench/cpu.sh

.PHONY: bench-api
## Authenticated read cost of ferry-api (CPU µs/request, p50/p99) at 2,000 req/s, SQLite and PostgreSQL
bench-api:
	bash crates/api/bench/run.sh

.PHONY: bench-builds
## Push webhook -> build Job created (p50/p99 over 40 pushes, real git server, real builder, in-memory cluster), SQLite and PostgreSQL
bench-builds:
	bash tests/scripts/with-postgres.sh $(CARGO) nextest run -p ferry-api --run-ignored only --no-capture -E 'test(bench_webhook_to_job_latency)'

.PHONY: bench-scheduler
## One job tick with 10,000 enabled jobs (none due / 100 due), SQLite and PostgreSQL, release build; the scheduler's idle RSS; status sync lag with 1,000 services
bench-scheduler:
	bash tests/scripts/with-postgres.sh $(CARGO) test --release -p ferry-scheduler --test bench_tick --test bench_sync -- --ignored --nocapture --test-threads 1

.PHONY: bench-notify
## Notification worker throughput: 1,000 events to two loopback webhook channels, SQLite and PostgreSQL
bench-notify:
	bash tests/scripts/with-postgres.sh cargo nextest run -p ferry-api --run-ignored only --no-capture -E 'test(bench_notification_throughput)'

.PHONY: chart-check
## Offline checks of the Helm chart (deploy/helm/ferry): helm lint, kubernetes-validate, checkov, rendered-output tests. Installs its tools into .tools/ once.
chart-check:
	bash deploy/scripts/chart-check.sh

.PHONY: image image-check
## OCI images without a Docker daemon (buildah): target/images/<name>.oci.tar per service, with size and digest
image:
	bash deploy/scripts/image-build.sh

## After `make image`: same inputs -> same digest, <= 30 MiB each, non-root, no shell (except the builder's /bin/sh for git's GIT_SSH_COMMAND), and a podman smoke test of the api (--version, migrate an SQLite volume)
image-check:
	bash deploy/scripts/image-check.sh

.PHONY: e2e
## On a real cluster (KUBECONFIG, E2E_REGISTRY; needs kubectl, helm, grpcurl): install, helm test, register, deploy an app, curl it through the proxy, uninstall. Not run by CI.
e2e:
	bash deploy/scripts/e2e.sh

.PHONY: chart-mutants
## Proves the chart checks can fail: breaks one thing at a time and expects make chart-check's steps to catch it (not in CI)
chart-mutants:
	bash deploy/scripts/chart-mutants.sh

.PHONY: cli
## Build the `ferry` command-line tool (release) and say how to install it
cli:
	$(CARGO) build --release -p ferry-cli
	@echo "built $${CARGO_TARGET_DIR:-target}/release/ferry"
	@echo "install: cargo install --path crates/cli   (or copy the binary onto your PATH)"
	@echo "completions: ferry completion bash|zsh|fish; man page: ferry man > ferry.1"
