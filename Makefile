# minibroker: `make run` starts a local cluster, `make test` runs lint, types and tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench bench-replication bench-zk clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/minibroker cluster up --brokers 3 --coordinators 3 --data-dir ./data

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m bench.run

# Three brokers: RF 3 acks=all produce throughput and kill -9 leader failover.
bench-replication: $(STAMP)
	$(BIN)/python -m bench.replication_bench $(ARGS)

# Consumer groups on three brokers (docs/groups-bench.md): rebalance time eager vs
# cooperative, commit and consume throughput. ARGS="--rounds 5 --json groups.json" pass through.
.PHONY: bench-groups
bench-groups: $(STAMP)
	$(BIN)/python -m bench.groups_bench $(ARGS)

# The coordinator against Apache ZooKeeper 3.8 (apt-get install zookeeper default-jre-headless;
# without it only minibroker's side runs). ARGS="-n 20000" and so on pass through.
bench-zk: $(STAMP)
	$(BIN)/python -m bench.zk_compare $(ARGS)

# The long chaos run (docs/chaos.md): 10 minutes of kill, pause, restart and
# coordinator-kill against a process cluster this target starts in ./chaos-cluster and
# stops afterwards; the report goes to ./chaos-<timestamp>/. Against the compose cluster
# instead (it must be up; partitions too): make chaos CHAOS_TARGET=compose.
# CHAOS_DURATION=... and ARGS="--seed 42 ..." pass through.
.PHONY: chaos
CHAOS_DURATION ?= 600
CHAOS_TARGET ?= process

chaos: $(STAMP)
ifeq ($(CHAOS_TARGET),compose)
	$(BIN)/minibroker chaos --target compose --duration $(CHAOS_DURATION) \
		--faults kill,pause,partition,restart,coordinator-kill $(ARGS)
else
	$(BIN)/minibroker chaos --target process --start-cluster --cluster-dir ./chaos-cluster \
		--duration $(CHAOS_DURATION) $(ARGS)
endif

# Docker (docs/docker.md). `make image` builds minibroker:latest without any registry: a
# Debian base from debootstrap (built once, then cached), wheels built on this host, then
# docker build installing from those wheels only. IMAGE=... and BASE_IMAGE=... pass through.
.PHONY: image compose-up compose-down
# `docker compose` (the plugin) where it exists, else the standalone `docker-compose`.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

image:
	PYTHON=$(PYTHON) docker/build-image.sh

compose-up: image
	$(COMPOSE) up -d

# Stops and removes the containers; the data volumes stay (`$(COMPOSE) down -v` drops them).
compose-down:
	$(COMPOSE) down

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
