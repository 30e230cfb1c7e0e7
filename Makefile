# `make demo` sets everything up and runs the main job; `make test` runs the whole test suite.
# Both create .venv from nothing when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench proto clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
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

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
