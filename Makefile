# Quick start (as root on Debian 12):  make demo  |  make test
# Every target installs what it needs first, idempotently.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := cryptsetup-bin e2fsprogs util-linux fdisk mount qemu-system-x86 linux-image-amd64 \
                libudev1 kmod busybox-static iproute2
VENV_STAMP := $(VENV)/.installed

.PHONY: all deps apt-deps venv lint typecheck unit vm-test test fuzz demo demo-securepv bench clean

all: test

deps: apt-deps venv

# Installs only what is missing, so a second run touches nothing and needs no network.
apt-deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: deps
	$(BIN)/pytest -m 'not vm' -q

vm-test: deps
	$(BIN)/pytest -m vm -q

test: deps lint
	$(BIN)/pytest -q -rs

# The fuzz targets with a fresh random seed and 20x the examples of the bounded pass that
# `make test` runs (README, Fuzzing).
fuzz: deps
	HYPOTHESIS_PROFILE=long $(BIN)/pytest tests/fuzz -q --hypothesis-show-statistics

# The whole system: Coordinator, contrast generate/set, the Initializer with a secure PV,
# a Coordinator restart and recovery, the same data back.
demo: deps
	$(BIN)/python -m tests.demo

# The secure PV alone (initializer cryptsetup with a made-up workload secret).
demo-securepv: deps
	$(BIN)/python -m tests.demo_securepv

bench: deps
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) demo-work bench-work .mypy_cache .ruff_cache .pytest_cache .hypothesis
