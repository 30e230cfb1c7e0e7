# The service and the agent in one image: `autoscaler run ...` (deploy/helm, deploy/manifests)
# and `autoscaler agent ...` (deploy/examples/inferenceservice-with-agent.yaml).
#
#   docker build -t ghcr.io/kserve-autoscaler/kserve-autoscaler:0.1.0 .
#
# Not built in this repository's CI (no container runtime there); tests/unit/test_deploy.py
# checks that the image runs as the user the manifests expect, that the entry point is the
# console script they call, and that nothing the package needs is left out by .dockerignore.
# Runs with a read-only root filesystem: nothing is written outside /tmp (an emptyDir in the
# chart), and Python writes no bytecode at run time.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# gcc for the compiled core (mypyc, setup.py); AUTOSCALER_NATIVE=1 makes a failed build an error
# rather than a pure-Python image. The final stage needs no compiler.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
ENV AUTOSCALER_NATIVE=1
COPY pyproject.toml setup.py README.md ./
COPY native ./native
COPY autoscaler ./autoscaler
# A wheel of the package and its runtime dependencies only (no test extras).
RUN pip wheel --wheel-dir /wheels . \
 && python -m venv /opt/autoscaler \
 && /opt/autoscaler/bin/pip install --no-index --find-links /wheels kserve-autoscaler \
 && /opt/autoscaler/bin/python -m compileall -q /opt/autoscaler

FROM python:3.11-slim
# AUTOSCALER_NATIVE=1: the image runs the compiled core or does not start (autoscaler/native.py).
ENV PATH=/opt/autoscaler/bin:$PATH \
    AUTOSCALER_NATIVE=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/autoscaler /opt/autoscaler
# The non-root user of the chart's securityContext (runAsUser 65532, runAsNonRoot).
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["autoscaler"]
CMD ["run", "--help"]
