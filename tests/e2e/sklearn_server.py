"""A scikit-learn model served by the real KServe Python model server, for the end-to-end tests.

    python tests/e2e/sklearn_server.py --model_dir DIR --model_name iris --http_port 8080 \
        --enable_grpc false

Trains a LogisticRegression on the iris data that scikit-learn ships (no download), saves it
with joblib as ``DIR/model.joblib``, and serves it with ``kserve.ModelServer`` on 127.0.0.1:
V1 and V2 (Open Inference Protocol) REST endpoints, health at ``/v2/health/ready`` and
Prometheus metrics at ``/metrics``. The flags are KServe's own model-server flags (this parser
takes kserve's as its parent, as KServe's sklearnserver does), plus ``--model_dir``.

The model class is a small port of KServe's ``SKLearnModel`` (``kserve-sklearnserver`` is not
published on PyPI): it loads the joblib file in ``load()`` and answers ``predict`` through
kserve's own V2 helpers (``get_predict_input``/``get_predict_response``), so requests take the
same path through ``kserve.Model.__call__`` (and its ``request_*_seconds`` histograms) as in a
real KServe predictor pod.

KServe 0.21 exposes, per model (label ``model_name``), the prometheus_client histograms
``request_preprocess_seconds``, ``request_predict_seconds``, ``request_postprocess_seconds``
and ``request_explain_seconds`` (samples ``_bucket``, ``_count``, ``_sum``, ``_created``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

MODEL_FILE = "model.joblib"


def train(model_dir: Path) -> Path:
    """Fit the iris classifier and save it; returns the file written."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(x, y)
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / MODEL_FILE
    joblib.dump(model, path)
    return path


def main(argv: list[str] | None = None) -> None:
    import kserve
    from kserve.utils.utils import get_predict_input, get_predict_response

    class SKLearnModel(kserve.Model):  # type: ignore[misc]
        """Loads ``model.joblib`` from a directory and predicts classes (V1 or V2 payloads)."""

        def __init__(self, name: str, model_dir: Path) -> None:
            super().__init__(name)
            self.model_dir = model_dir
            self._model: Any = None
            self.ready = False

        def load(self) -> bool:
            import joblib

            self._model = joblib.load(self.model_dir / MODEL_FILE)
            self.ready = True
            return self.ready

        def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
            instances = get_predict_input(payload)
            return get_predict_response(payload, self._model.predict(instances), self.name)

    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1", help="the address the REST server binds")
    args, _ = parser.parse_known_args(argv)
    _bind_rest_server_to(args.host)

    train(args.model_dir)
    model = SKLearnModel(args.model_name, args.model_dir)
    model.load()
    kserve.ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        enable_grpc=args.enable_grpc,
        workers=1,
        enable_latency_logging=False,
        grace_period=5,
    ).start([model])


def _bind_rest_server_to(host: str) -> None:
    """KServe's REST server always binds 0.0.0.0 (right in a pod); tests listen on loopback only.

    ``ModelServer.start`` builds its ``RESTServer`` from the name in ``kserve.model_server``, so a
    subclass put there sets the host of the uvicorn config it has just built.
    """
    from kserve import model_server

    base = model_server.RESTServer

    class LoopbackRESTServer(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = host

    model_server.RESTServer = LoopbackRESTServer


if __name__ == "__main__":
    main(sys.argv[1:])
