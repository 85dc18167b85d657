# emoportrait: `make demo` runs the embedded default model, `make test` runs the tests.
# Both create (or reuse) a virtualenv in .venv. torch is pinned to 2.13.0 so the CPU wheel
# is used on CPU machines; on a GPU machine install your CUDA build of torch into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: install test test-slow demo lint bench default-model clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt "torch==2.13.0"
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	# mediapipe 0.10.21 is the newest release with bundled face models; its metadata pins
	# numpy<2 and pulls jax, so it is installed without dependencies (DESIGN.md section 4).
	$(PIP) install -q --no-deps "mediapipe==0.10.21"
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  echo "installing espeak-ng (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; }
	@rm -f $(VENV)/.installed-*
	@touch $@

test: install
	$(PY) -m pytest tests

test-slow: install
	$(PY) -m pytest tests -m slow

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

bench: install
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_training_encode.py
	$(PY) benchmarks/bench_training_vae.py

demo: install
	$(PY) -m emoportrait.demo --out demo

# Re-train the embedded default model from nothing (synthetic world -> shards -> VAE -> stages 1-3).
default-model: install
	scripts/train_default_model.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
