# atrest: make run | make test | make bench | make lint
SHELL := /bin/bash
DEMO ?= $(CURDIR)/demo
CARGO ?= cargo

.PHONY: run test lint bench build venv

build:
	$(CARGO) build --release

venv:
	tools/pyenv.sh >/dev/null

# Formats (first time only) a demo volume of three sparse 2 GiB drive images under ./demo with a
# local master key, mounts it on ./demo/mnt and serves the API on 127.0.0.1:8000. Ctrl-C unmounts.
run: build
	tools/demo.sh "$(DEMO)"

# Every test: unit, integration (real FUSE mounts, fio, qq, PyKMIP). Needs root and /dev/fuse.
test: venv
	$(CARGO) test --release -- --test-threads=2

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

bench: build venv
	bench/run.sh
