# Entry points. Everything a target needs is set up on first use (the Python virtualenv with
# moto under .venv, a free loopback port for it); the Rust build cache lives outside the
# checkout so that fresh clones and CI reuse it.

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/cloudinary-ocr/target
CARGO ?= cargo
MOTO := infra/scripts/moto.sh
DEMO_ARGS ?=

.PHONY: help demo test chaos lint unit setup emulator moto-start moto-stop clean

help:
	@echo "make demo    - run the whole pipeline end to end on local servers (moto + Cloudinary emulator)"
	@echo "make test    - formatting, lints, unit and integration tests (starts and stops moto itself)"
	@echo "make chaos   - 10,000 assets under injected faults, with checks (CHAOS_ARGS='--assets N')"
	@echo "make setup   - create the virtualenv with the pinned moto (done by demo/test on first use)"
	@echo "make emulator - serve the Cloudinary emulator alone (ARGS='--generate 1000')"

setup:
	@infra/scripts/venv.sh

demo: setup
	$(CARGO) build -p local-stack
	$(MOTO) run $(CARGO_TARGET_DIR)/debug/local-stack $(DEMO_ARGS)

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace --lib --bins

test: setup lint
	$(CARGO) build --workspace --all-targets
	$(MOTO) run $(CARGO) test --workspace --all-targets

emulator:
	$(CARGO) run -p cloudinary-emulator -- $(ARGS)

moto-start: setup
	@$(MOTO) start

moto-stop:
	@$(MOTO) stop

clean:
	rm -rf .venv .local

chaos: setup
	$(CARGO) build -p local-stack --bin chaos
	$(MOTO) run $(CARGO_TARGET_DIR)/debug/chaos $(CHAOS_ARGS)
