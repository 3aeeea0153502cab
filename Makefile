# `make demo`:   the main job on the local lab: converge site.yml, switch GPU modes, chat.
# `make test`:   everything CI runs, its stages in parallel lanes (scripts/test-stages.sh;
#                logs in tests/output/make-test). Both install what they need (a venv
#                cached outside the checkout, keyed by the pinned requirements).
# `make render`: what site.yml would apply, written to ./render (no cluster needed).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := $(shell ./scripts/venv.sh)
export PATH := $(VENV)/bin:$(PATH)
RENDER_DIR ?= render

.PHONY: demo test test-real-vllm litellm-upgrade-check lint sanity scan pytest molecule molecule-lab molecule-gpu-worker render docs system-deps lab-up lab-down lab-status

test:
	./scripts/test-stages.sh

lint:
	ansible-lint --profile production
	antsibull-changelog lint

sanity:
	./scripts/sanity.sh

# The render, scanned by a Kubernetes policy scanner; what stays is listed in tests/scan/accepted-findings.yml.
scan:
	./scripts/scan-manifests.sh

pytest: system-deps
	pytest -q -n auto --dist loadfile --no-loadscope-reorder --durations=25 -m "not real_vllm" tests/unit tests/project

# The tests marked real_vllm and the real_vllm molecule scenario: the REAL vLLM CPU build on
# the lab's tiny models (the FAKE vLLM against it, the gpu_mode round trip ml -> r1 -> gaming
# -> ml, the gateway in front of it). One vLLM at a time, serially; the vLLM venv (~3.4 GB)
# installs itself on first use. See docs/lab.md.
test-real-vllm: system-deps
	pytest -q -m real_vllm tests/project
	molecule test -s real_vllm

# The gateway's guarantees on the pinned LiteLLM and on the newest installable one, each in its
# own cached venv: a pass/fail table per guarantee (docs/gateway.md). Not part of `make test`.
litellm-upgrade-check:
	./scripts/litellm-upgrade-check.sh

molecule: molecule-lab molecule-gpu-worker

molecule-lab: system-deps
	molecule test  # the lab scenario, extensions/molecule/default

molecule-gpu-worker: system-deps
	./scripts/build-debian-image.sh
	mkdir -p $(addprefix $(HOME)/.cache/homelab-inference/,apt-debian12 apt-debian12-cuda ccache-debian12)
	molecule test -s gpu_worker

system-deps:
	./scripts/system-deps.sh

demo:
	python scripts/demo.py

# The lab's command line with tools/ on the Python path; in a shell, `. scripts/env.sh` and
# `python -m lab ...` do the same (faults, `up --profile fast`, ...).
LAB := PYTHONPATH=$(CURDIR)/tools python -m lab

lab-up:
	$(LAB) up

lab-down:
	$(LAB) down

lab-status:
	$(LAB) status

render:
	ansible-playbook site.yml --tags render -e render_dir=$(RENDER_DIR)
	@echo "Rendered into $(RENDER_DIR)/: $$(ls $(RENDER_DIR))"

docs:
	python scripts/gen_docs.py
