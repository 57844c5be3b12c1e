# Entry points. Everything a target needs is set up on first use (the Python virtualenv with
# moto under .venv, a free loopback port for it); the Rust build cache lives outside the
# checkout so that fresh clones and CI reuse it.

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/cloudinary-ocr/target
CARGO ?= cargo
MOTO := infra/scripts/moto.sh
DEMO_ARGS ?=
BENCH_ARGS ?=
SIM_ARGS ?=

.PHONY: help demo test bench sim chaos lint unit setup tools scan-tools template-lint build deploy deploy-parameters sync logs release-bootstraps emulator moto-start moto-stop clean install-ctl
TOOLS_PATH := $(CURDIR)/.venv-tools/bin:$(PATH)
export SAM_CLI_TELEMETRY := 0
ENV ?= default

help:
	@echo "make demo    - run the whole pipeline end to end on local servers (moto + Cloudinary emulator)"
	@echo "make test    - formatting, lints, unit and integration tests (starts and stops moto itself)"
	@echo "make chaos   - 10,000 assets under injected faults, with checks (CHAOS_ARGS='--assets N')"
	@echo "make bench   - benchmarks against the blog-style baseline; writes BENCHMARKS.md (BENCH_ARGS='--help')"
	@echo "make sim     - 10,000,000 images through the pipeline in virtual time; its section of BENCHMARKS.md (SIM_ARGS='--help')"
	@echo "make build   - build both functions for arm64 with sam build (cargo-lambda, zig)"
	@echo "make deploy  - sam deploy with samconfig.toml's settings (ENV=default or ENV=prod; PARAMS='Name=value' adds)"
	@echo "make deploy-parameters - the parameters a deploy would send (ENV=..., PARAMS=..., AS=create|update), offline"
	@echo "make sync    - sam sync a development stack (ENV=default)"
	@echo "make logs    - follow the functions' logs (ENV=..., NAME=WorkerFunction)"
	@echo "make setup   - create the virtualenv with the pinned moto (done by demo/test on first use)"
	@echo "make emulator - serve the Cloudinary emulator alone (ARGS='--generate 1000')"
	@echo "make install-ctl - install ocr-ctl into PREFIX/bin (PREFIX=~/.local by default)"

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

tools:
	@infra/scripts/venv.sh tools
	@if command -v rustup >/dev/null; then rustup target list --installed | grep -q aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu; fi

# checkov, in a virtualenv of its own (infra/scripts/scan-requirements.txt says why).
scan-tools:
	@infra/scripts/venv.sh scan

# cfn-lint runs with AWS's Serverless Rules; checkov scans what SAM's translator makes of the
# template (what CloudFormation deploys: the generated event source mapping, schedule and invoke
# config too; SAM copies a function's Metadata, and with it its checkov skips, onto the Lambda
# function). A finding fails the target unless the template fixes it or skips it in the
# resource's Metadata (cfn-lint: config: ignore_checks; checkov: skip, with a comment).
# checkov runs offline: no Prisma Cloud download (--skip-download, BC_SKIP_MAPPING), no PyPI
# version check (CKV_SKIP_PACKAGE_UPDATE_CHECK), and a template it cannot parse fails.
CHECKOV_ENV := BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=TRUE CKV_PARSE_ERROR_FAIL=true
template-lint: tools scan-tools
	PATH=$(TOOLS_PATH) cfn-lint template.yaml --append-rules cfn_lint_serverless.rules
	PATH=$(TOOLS_PATH) sam validate --lint --region us-east-1
	PATH=$(TOOLS_PATH) sam validate --config-env prod --region us-east-1
	.venv-tools/bin/python infra/scripts/check_samconfig.py
	@mkdir -p .local
	.venv-tools/bin/python infra/scripts/sam_transform.py template.yaml > .local/template.transformed.json
	$(CHECKOV_ENV) .venv-scan/bin/checkov --quiet --compact --skip-download --framework cloudformation -f .local/template.transformed.json

# The release bootstraps for the host, run by the Runtime API test.
release-bootstraps:
	$(CARGO) build --release -p worker -p lister -p notifier

test: setup lint template-lint build
	@infra/scripts/arm64-runner.sh
	$(CARGO) build --workspace --all-targets
	$(MAKE) --no-print-directory release-bootstraps
	$(MOTO) run $(CARGO) test --workspace --all-targets

build: tools
	PATH=$(TOOLS_PATH) sam build --beta-features
	.venv-tools/bin/python infra/scripts/artefacts.py

# ENV names a samconfig.toml environment (default, prod); every value a deploy needs is there.
# PARAMS='Name=value ...' adds to (never replaces) the environment's parameter_overrides.
PARAMS ?=
AS ?= update
deploy: build
	PATH=$(TOOLS_PATH) .venv-tools/bin/python infra/scripts/deploy.py $(ENV) $(PARAMS)

# The parameters `make deploy` would send CloudFormation (AS=create for a stack being created,
# AS=update for an existing one), without calling AWS.
deploy-parameters: tools
	@PATH=$(TOOLS_PATH) .venv-tools/bin/python infra/scripts/deploy.py $(ENV) $(PARAMS) --print-parameters $(AS)

# A development stack kept in step with the code; answers SAM's one-time question whether the
# stack is a development one (sync bypasses CloudFormation for code changes).
sync: tools
	yes | PATH=$(TOOLS_PATH) sam sync --config-env $(ENV)

# The functions' logs, followed (`sam logs`); NAME=WorkerFunction or ListerFunction for one.
logs: tools
	PATH=$(TOOLS_PATH) sam logs --config-env $(ENV) $(if $(NAME),--name $(NAME),)

# The operator's tool on the PATH (PREFIX/bin); see README, "Operator tool".
PREFIX ?= $(HOME)/.local
install-ctl:
	$(CARGO) install --locked --path infra/ctl --root $(PREFIX)
	@echo "ocr-ctl installed in $(PREFIX)/bin; completions: ocr-ctl completions bash|zsh|fish"

emulator:
	$(CARGO) run -p cloudinary-emulator -- $(ARGS)

moto-start: setup
	@$(MOTO) start

moto-stop:
	@$(MOTO) stop

clean:
	rm -rf .venv .venv-tools .venv-scan .local .aws-sam

chaos: setup
	$(CARGO) build -p local-stack --bin chaos
	$(MOTO) run $(CARGO_TARGET_DIR)/debug/chaos $(CHAOS_ARGS)

# Not part of `make test`: figures, not checks. Builds what it measures (the release bootstraps,
# the shipped arm64 artefacts) and runs every scenario on its own moto.
bench: setup build
	@infra/scripts/arm64-runner.sh
	$(CARGO) build --release -p worker -p lister -p cloudinary-emulator
	$(CARGO) build --release -p local-stack --bin bench
	BENCH_PYTHON=$(CURDIR)/.venv/bin/python $(MOTO) run $(CARGO_TARGET_DIR)/release/bench $(BENCH_ARGS)

# Not part of `make test` (a small seeded run is): the whole pipeline over an account of ten
# million images in virtual time, without servers; writes its section of BENCHMARKS.md.
sim:
	$(CARGO) build --release -p local-stack --bin sim
	$(CARGO_TARGET_DIR)/release/sim $(SIM_ARGS)
