"""``make demo``: a real model, served by ``modelserve serve``, called the three ways clients do.

Why this script exists: it is the README's first command, so it must show the whole data path on
a fresh machine with nothing faked. It trains a scikit-learn classifier on the handwritten-digits
dataset that ships with scikit-learn (8x8 images, 10 classes), converts it to ONNX with skl2onnx
(ZipMap off, so the outputs are plain tensors), starts the real server as a subprocess on
127.0.0.1 with free ports, and sends the held-out test set over

1. HTTP/REST with JSON tensors (plain ``urllib``: what ``curl`` sends),
2. HTTP/REST with Triton's binary tensor extension (``tritonclient.http``, concurrent, so the
   dynamic batcher has something to batch),
3. gRPC (``tritonclient.grpc``),

then prints predictions against the true labels, the accuracy per protocol, the key series from
``/metrics``, and stops the server with SIGTERM, expecting a clean exit 0. Any failure (server
error, accuracy far from scikit-learn's own, predictions that differ between protocols, unclean
exit) makes the script exit non-zero.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "digits"
READY_TIMEOUT_S = 90.0
MIN_ACCURACY = 0.90


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and why."""


def say(text: str = "") -> None:
    print(text, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- the model


def train_and_convert(out: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """Train on 75 % of the digits, convert to ONNX; return (model path, X_test, y_test, sklearn preds)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(x_train, y_train)
    sk_pred = clf.predict(x_test)
    say(f"trained LogisticRegression on {len(x_train)} digits; scikit-learn test accuracy "
        f"{np.mean(sk_pred == y_test):.3f} on {len(x_test)} held-out images")

    onnx_model = convert_sklearn(
        clf,
        initial_types=[("pixels", FloatTensorType([None, x.shape[1]]))],
        options={id(clf.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    path = out / f"{MODEL}.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    say(f"converted to ONNX with skl2onnx: {path} ({path.stat().st_size} bytes)")
    return path, x_test, y_test, sk_pred


# --------------------------------------------------------------------------- the server


def modelserve_command() -> list[str]:
    exe = Path(sys.executable).parent / "modelserve"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("modelserve")
    return [found] if found else [sys.executable, "-m", "modelserve_cli.main"]


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_ready(proc: subprocess.Popen[bytes], base: str, log_path: Path) -> float:
    start = time.monotonic()
    while time.monotonic() - start < READY_TIMEOUT_S:
        if proc.poll() is not None:
            raise DemoError(f"modelserve serve exited with {proc.returncode} before it was ready:\n"
                            + log_path.read_text(errors="replace")[-4000:])
        try:
            with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise DemoError(f"modelserve serve not ready after {READY_TIMEOUT_S:.0f} s:\n"
                    + log_path.read_text(errors="replace")[-4000:])


# --------------------------------------------------------------------------- the three clients


def predict_json(base: str, input_name: str, x: np.ndarray) -> np.ndarray:
    """Plain HTTP JSON (what curl sends): one request for the whole test set."""
    body = {
        "id": "demo-json",
        "inputs": [{"name": input_name, "shape": list(x.shape), "datatype": "FP32",
                    "data": x.flatten().tolist()}],
        "outputs": [{"name": "label"}],
    }
    reply = http_json(f"{base}/v2/models/{MODEL}/infer", body)
    if reply.get("id") != "demo-json":
        raise DemoError(f"the JSON reply does not echo the request id: {reply.get('id')!r}")
    (out,) = reply["outputs"]
    return np.asarray(out["data"], dtype=np.int64).reshape(out["shape"])


def predict_http_binary(http_url: str, input_name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """tritonclient.http, binary tensors, one row per request, 8 in flight (the server batches them).

    Concurrency through the client's own ``async_infer`` (its gevent pool of ``concurrency``
    connections): an ``InferenceServerClient`` must stay on one thread. Shared by a thread pool, it
    failed under load with gevent's "Cannot switch to a different thread".
    """
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=http_url, concurrency=8, network_timeout=60.0)
    outputs = [httpclient.InferRequestedOutput("label", binary_data=True),
               httpclient.InferRequestedOutput("probabilities", binary_data=True)]

    def request(row: np.ndarray) -> Any:
        inp = httpclient.InferInput(input_name, [1, row.shape[0]], "FP32")
        inp.set_data_from_numpy(row[None, :], binary_data=True)
        return client.async_infer(MODEL, [inp], outputs=outputs)

    try:
        results = [pending.get_result() for pending in [request(row) for row in x]]
    finally:
        client.close()
    labels = np.array([int(r.as_numpy("label")[0]) for r in results], dtype=np.int64)
    return labels, np.stack([r.as_numpy("probabilities")[0] for r in results])


def predict_grpc(grpc_url: str, input_name: str, x: np.ndarray) -> np.ndarray:
    """tritonclient.grpc: batches of 32 rows."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=grpc_url)
    try:
        if not client.is_model_ready(MODEL):
            raise DemoError("gRPC ModelReady says the model is not ready")
        labels = []
        for start in range(0, len(x), 32):
            chunk = x[start:start + 32]
            inp = grpcclient.InferInput(input_name, list(chunk.shape), "FP32")
            inp.set_data_from_numpy(chunk)
            result = client.infer(MODEL, [inp], outputs=[grpcclient.InferRequestedOutput("label")])
            labels.append(result.as_numpy("label").reshape(-1))
    finally:
        client.close()
    return np.concatenate(labels).astype(np.int64)


# --------------------------------------------------------------------------- metrics


def show_metrics(base: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append(s)

    def total(name: str, **labels: str) -> float:
        return sum(float(s.value) for s in samples.get(name, [])
                   if s.labels.get("model") == MODEL and all(s.labels.get(k) == v for k, v in labels.items()))

    say("\nkey metrics from /metrics:")
    for protocol in ("http", "grpc"):
        say(f"  modelserve_requests_total{{protocol={protocol!r}, code='200'}} = "
            f"{total('modelserve_requests_total', protocol=protocol, code='200'):.0f}")
    for hist in ("request", "queue", "compute"):
        count = total(f"modelserve_{hist}_duration_seconds_count")
        mean = total(f"modelserve_{hist}_duration_seconds_sum") / count if count else float("nan")
        say(f"  modelserve_{hist}_duration_seconds: {count:.0f} observations, mean {mean * 1000:.2f} ms")
    batches = total("modelserve_batch_size_count")
    rows = total("modelserve_batch_size_sum")
    say(f"  modelserve_batch_size: {batches:.0f} batches, {rows:.0f} rows, "
        f"mean {rows / batches if batches else float('nan'):.2f} rows per batch")
    say(f"  modelserve_inflight_requests = {total('modelserve_inflight_requests'):.0f}")
    say(f"  modelserve_model_ready = {total('modelserve_model_ready'):.0f}")
    if not total("modelserve_requests_total"):
        raise DemoError("/metrics counted no requests for the model")


# --------------------------------------------------------------------------- main


def check_accuracy(name: str, pred: np.ndarray, y: np.ndarray, sk_pred: np.ndarray) -> float:
    accuracy = float(np.mean(pred == y))
    agreement = float(np.mean(pred == sk_pred))
    say(f"  {name:<28} accuracy {accuracy:.3f}   agrees with scikit-learn on {agreement:.1%} of images")
    if accuracy < MIN_ACCURACY:
        raise DemoError(f"{name}: accuracy {accuracy:.3f} is below {MIN_ACCURACY}")
    if agreement < 0.99:
        raise DemoError(f"{name}: only {agreement:.1%} of predictions match scikit-learn's")
    return accuracy


def run_demo(workdir: Path) -> None:
    model_path, x_test, y_test, sk_pred = train_and_convert(workdir)
    http_port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    log_path = workdir / "server.log"
    cmd = [*modelserve_command(), "serve", "--model", f"{MODEL}={model_path}", "--host", "127.0.0.1",
           "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--max-batch-size", "32",
           "--max-batch-delay-ms", "2", "--drain-seconds", "10", "--log-format", "text"]
    say(f"\nstarting: {' '.join(cmd)}")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        took = wait_ready(proc, base, log_path)
        say(f"ready after {took:.1f} s (HTTP {base}, gRPC 127.0.0.1:{grpc_port})")
        meta = http_json(f"{base}/v2/models/{MODEL}")
        (inp,) = meta["inputs"]
        say(f"model metadata: platform={meta.get('platform')} inputs={meta['inputs']} "
            f"outputs={[o['name'] for o in meta['outputs']]}")

        say(f"\nsending the {len(x_test)} held-out images three ways:")
        by_json = predict_json(base, inp["name"], x_test)
        by_binary, probabilities = predict_http_binary(f"127.0.0.1:{http_port}", inp["name"], x_test)
        by_grpc = predict_grpc(f"127.0.0.1:{grpc_port}", inp["name"], x_test)

        say("\n  image  true  JSON  binary  gRPC  p(binary)")
        for i in range(12):
            mark = "" if by_binary[i] == y_test[i] else "   <- wrong"
            say(f"  {i:>5}  {y_test[i]:>4}  {by_json[i]:>4}  {by_binary[i]:>6}  {by_grpc[i]:>4}  "
                f"{probabilities[i].max():.3f}{mark}")
        say("  ...")
        say("")
        check_accuracy("HTTP JSON (urllib)", by_json, y_test, sk_pred)
        check_accuracy("HTTP binary (tritonclient)", by_binary, y_test, sk_pred)
        check_accuracy("gRPC (tritonclient)", by_grpc, y_test, sk_pred)
        if not (np.array_equal(by_json, by_binary) and np.array_equal(by_json, by_grpc)):
            raise DemoError("the three protocols returned different predictions for the same images")
        show_metrics(base)
    finally:
        if proc.poll() is None:
            say("\nsending SIGTERM ...")
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise DemoError("the server did not exit within 60 s of SIGTERM") from None
    if proc.returncode != 0:
        raise DemoError(f"the server exited with {proc.returncode} after SIGTERM:\n"
                        + log_path.read_text(errors="replace")[-4000:])
    say("server drained and exited with code 0")


def main() -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="modelserve-demo-"))
    try:
        run_demo(workdir)
    except (DemoError, urllib.error.URLError, OSError, KeyError, ValueError) as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr, flush=True)
        log = workdir / "server.log"
        if log.is_file() and os.environ.get("MODELSERVE_DEMO_KEEP"):
            print(f"server log kept at {log}", file=sys.stderr)
        return 1
    finally:
        if not os.environ.get("MODELSERVE_DEMO_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    say(f"\ndemo OK in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
