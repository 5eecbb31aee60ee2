# amr-evol: `make run` runs the default local job, `make test` the test suite. Both set up what
# they need (a venv in .venv, the default models) and are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU torch: pip must take torch 2.13.0's CPU wheel. Where the default index serves the CUDA build,
# point it at PyTorch's CPU index: make setup PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu"
PIP_EXTRA ?=
MODELS ?= smollm2-135m-instruct qwen2.5-coder-0.5b-instruct all-minilm-l6-v2
CONFIG ?= jobs/configs/run_local_cpu.yaml
export VLLM_CPU_KVCACHE_SPACE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup bwrap chromium models run test mutation lint bench bench-teacher bench-sandbox bench-eval-sandbox bench-pipeline bench-decontam bench-scale bench-faults bench-table bench-quality bench-sim clean

setup: $(VENV)/.installed bwrap chromium

$(VENV)/.installed: pyproject.toml
	@echo "setting up $(VENV): torch (CPU), vLLM (CPU), Ray, the project (pip's output: $(VENV)/setup.log)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch pinned in the same command, so nothing resolves to a CUDA build on CPU machines; evalplus 0.3.1
	@# pulls API clients it does not need for evaluation: no deps (see the eval extra); PyPI's torchvision is a
	@# CUDA build that breaks `import vllm`, and triton is unused on CPU
	@( $(BIN)/pip install -U pip && \
	  $(BIN)/pip install $(PIP_EXTRA) torch==2.13.0 -e '.[cpu,eval,test]' && \
	  $(BIN)/pip install --no-deps evalplus==0.3.1 && \
	  $(BIN)/pip uninstall -y torchvision torchaudio torchcodec triton ) > $(VENV)/setup.log 2>&1 || \
	  { tail -n 30 $(VENV)/setup.log; echo "set-up failed: $(VENV)/setup.log has pip's output"; exit 1; }
	@touch $@

bwrap:
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) ; } || \
	  echo "warning: bubblewrap (bwrap) is not installed and could not be: the sandbox falls back to process isolation (see README)"

chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "warning: chromium is not installed and could not be: the report's render test is skipped (it fails under CI)"

models: setup
	$(BIN)/amr models pull $(MODELS)

run: models
	$(BIN)/amr run --config $(CONFIG)

test: setup
	$(BIN)/pytest tests

# mutation testing of the files the fast unit tests hold (~30 min on 2 cores): docs/mutation.md
mutation: setup
	$(BIN)/python tests/mutation.py $(FILES)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: bench-sandbox bench-eval-sandbox bench-pipeline bench-teacher bench-decontam bench-scale bench-faults bench-table

bench-teacher: models
	$(BIN)/python bench/teacher.py

bench-sandbox: setup
	$(BIN)/python bench/sandbox.py

bench-eval-sandbox: setup
	$(BIN)/python bench/eval_sandbox.py

bench-pipeline: models
	$(BIN)/python bench/pipeline.py

bench-faults: setup
	$(BIN)/python bench/faults.py

bench-decontam: models
	$(BIN)/python bench/decontam.py

bench-scale: models
	$(BIN)/python bench/scale.py

bench-table: setup
	$(BIN)/python bench/module_table.py

# not in `make bench`: response quality per method takes ~1 h on 2 cores (bench/quality.py --help)
bench-quality: models
	$(BIN)/python bench/quality.py $(ARGS)

# not in `make bench`: the cluster job on a simulated 4 x 8 H100 cluster, ~40 min on 2 cores (5,000: ~10; bench/sim_cluster.py --help)
bench-sim: models
	$(BIN)/python bench/sim_cluster.py --config jobs/configs/run_gpu_cluster.yaml --nodes 4 --gpus-per-node 8 \
	  --accelerator H100 --instructions 20000 --json bench/results/sim_cluster.json $(ARGS)

clean:
	rm -rf runs .pytest_cache
