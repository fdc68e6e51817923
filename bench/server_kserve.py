"""KServe's Python ModelServer serving the benchmark models through a custom `kserve.Model` on ONNX Runtime.

Why this file exists: issue 2's first target compares modelserve with the server a KServe user would write
for an ONNX model in Python. It runs from its own virtualenv (`bench/.venv-kserve`, made by bench/run.py),
because kserve pins dependencies that conflict with modelserve's, and is started by bench/run.py as a
subprocess on 127.0.0.1.

The model follows KServe's documented custom-model pattern (a synchronous `predict` taking a V2
`InferRequest` and returning an `InferResponse`; KServe itself runs a synchronous predict on its event loop,
as its own sklearn/xgboost runtimes do). To give KServe its best case, its per-request latency log line is
off and uvicorn's access log is silenced, and the ONNX Runtime session is built with exactly the settings
bench/run.py passes (the ones modelserve uses): same threads, same graph optimisation, same spinning.

`session_options` is importable without kserve installed, so bench/run.py builds the in-process baseline
with the very same function.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

import numpy as np
import onnxruntime as ort

_ORT_TO_V2 = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(float16)": "FP16",
    "tensor(bool)": "BOOL",
}


def session_options(settings: dict[str, Any]) -> ort.SessionOptions:
    """Builds SessionOptions from a plain dict (it crosses process boundaries as JSON).

    Keys: intra_op_threads, inter_op_threads (0 = ORT default), graph_optimization ("all", "extended",
    "basic", "disable"), execution_mode ("sequential"/"parallel"), config (session config entries such as
    {"session.intra_op.allow_spinning": "0"}).
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(settings.get("intra_op_threads", 0))
    opts.inter_op_num_threads = int(settings.get("inter_op_threads", 0))
    level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    opts.graph_optimization_level = level[str(settings.get("graph_optimization", "all"))]
    opts.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL
        if settings.get("execution_mode") == "parallel"
        else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    for key, value in dict(settings.get("config", {})).items():
        opts.add_session_config_entry(str(key), str(value))
    return opts


def make_session(path: str, settings: dict[str, Any]) -> ort.InferenceSession:
    return ort.InferenceSession(
        path, sess_options=session_options(settings), providers=["CPUExecutionProvider"]
    )


def _serve(models: list[tuple[str, str]], settings: dict[str, Any], http_port: int) -> None:
    import kserve  # only in bench/.venv-kserve
    from kserve import InferOutput, InferRequest, InferResponse

    class OnnxModel(kserve.Model):  # type: ignore[misc]
        def __init__(self, name: str, path: str) -> None:
            super().__init__(name)
            self.path = path
            self.session: ort.InferenceSession | None = None
            self.load()

        def load(self) -> bool:
            session = make_session(self.path, settings)
            inp = session.get_inputs()[0]
            shape = [1 if not isinstance(d, int) else d for d in inp.shape]
            session.run(None, {inp.name: np.zeros(shape, dtype=np.float32)})  # warm-up, as modelserve does
            self.outputs = [(o.name, _ORT_TO_V2[o.type]) for o in session.get_outputs()]
            self.session = session
            self.ready = True
            return True

        def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
            assert self.session is not None
            feeds = {i.name: i.as_numpy() for i in payload.inputs}
            results = self.session.run(None, feeds)
            outputs = [
                InferOutput(name=n, shape=list(r.shape), datatype=dt, data=r)
                for (n, dt), r in zip(self.outputs, results, strict=True)
            ]
            return InferResponse(
                response_id=payload.id or "",
                model_name=self.name,
                infer_outputs=outputs,
                use_binary_outputs=payload.use_binary_outputs,
                requested_outputs=payload.request_outputs,
            )

    import uvicorn

    class LoopbackConfig(uvicorn.Config):
        """KServe hard-codes host 0.0.0.0; the benchmark listens on loopback only."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["host"] = "127.0.0.1"
            super().__init__(*args, **kwargs)

    uvicorn.Config = LoopbackConfig  # type: ignore[misc]
    loaded = [OnnxModel(name, path) for name, path in models]
    server = kserve.ModelServer(
        http_port=http_port, enable_grpc=False, workers=1, enable_latency_logging=False
    )
    # Its best case: no access-log line and no timing trace line per request (the levels drop them early).
    for noisy in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    server.start(loaded)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="KServe ModelServer over ONNX Runtime (benchmark baseline)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--settings", default="{}", help="ONNX Runtime settings as JSON (see session_options)"
    )
    args = parser.parse_args(argv)
    models = [tuple(m.split("=", 1)) for m in args.model]
    # kserve parses sys.argv at import time (parse_known_args): hide ours from it.
    sys.argv = sys.argv[:1]
    _serve([(n, p) for n, p in models], json.loads(args.settings), args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
