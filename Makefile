# `make demo` sets everything up and runs the main job; `make test` runs the whole test suite.
# Both create .venv from nothing when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The compiled core (autoscaler/native.py): the modules setup.py compiles with mypyc. The install
# builds it; after an edit to one of them, `make test`/`make demo` rebuild it in place (a build
# older than its sources is never run: the sources are, until it is rebuilt).
NATIVE := $(VENV)/.native
NATIVE_SRC := $(shell sed -n 's/^    "\(autoscaler\.[a-z_.]*\)",$$/\1/p' autoscaler/native.py | tr . / | sed 's/$$/.py/')

.PHONY: demo test lint bench proto clean native

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'setuptools>=77'
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP) $(NATIVE)

$(NATIVE): $(STAMP) $(NATIVE_SRC) autoscaler/native.py native/mypyc.ini
	$(PY) setup.py --quiet build_ext --inplace
	touch $(NATIVE)

native: $(STAMP)
	rm -f $(NATIVE)
	$(MAKE) $(NATIVE)

demo: $(STAMP) $(NATIVE)
	$(PY) -m autoscaler validate policies
	mkdir -p out
	$(PY) -m autoscaler trace synth --out out/demo-trace.csv --duration 7200 --mean-rps 4 --seed 7 \
		--tokens azure-conv --diurnal-period 7200 --bursts-per-hour 2
	$(PY) -m autoscaler simulate --trace out/demo-trace.csv \
		--policy policies/baselines/knative-kpa.yaml --policy policies/baselines/hpa-concurrency.yaml \
		--policy policies/baselines/keda-queue.yaml --policy policies/baselines/static-peak.yaml \
		--policy policies/llm-chat.yaml --json out/demo.json --report out/demo-report

lint: $(STAMP)
	$(PY) -m ruff check autoscaler tests benchmarks
	$(VENV)/bin/lint-imports
	$(PY) -m mypy autoscaler

test: $(STAMP) $(NATIVE)
	$(PY) -m pytest

bench: $(STAMP) $(NATIVE)
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_sim.py
	$(PY) benchmarks/bench_traces.py

# KEDA's external scaler contract: the generated stubs are committed (see docs/keda.md); they
# need protobuf >= the version in the header of externalscaler_pb2.py and grpcio >= the one
# in externalscaler_pb2_grpc.py.
proto:
	$(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. \
		autoscaler/actuators/proto/externalscaler.proto

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build
	find autoscaler -name '*.so' -delete
	rm -f autoscaler/_native.stamp
