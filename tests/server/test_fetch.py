"""Model fetching against real endpoints on 127.0.0.1: the file system, an in-test HTTP server
and moto's S3 server, plus the ``modelserve fetch`` command the init container runs.

Every failure case also checks that nothing partial is left in the destination directory.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from serverlib import RunningServer, ServerFactory

from modelserve_server.fetch import FetchError, cache_dir_for, fetch_model, redact_uri

PAYLOAD = os.urandom(3 * (1 << 20) + 123)  # > several chunks, not a multiple of the chunk size
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
WRONG_SHA = "0" * 64
REPO_ROOT = Path(__file__).resolve().parents[2]


def _listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


# ---------------------------------------------------------------------------------------------
# Fixtures: an HTTP server and an S3 server, both real, both on 127.0.0.1


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path.startswith("/truncated"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:1000])
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/model.onnx")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()


class HttpServer:
    def __init__(self, root: Path) -> None:
        handler = type("Handler", (_Handler,), {"requests": []})
        self.requests: list[str] = handler.requests

        def make(*args: Any) -> _Handler:
            return handler(*args, directory=str(root))

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "model.onnx").write_bytes(PAYLOAD)
    server = HttpServer(root)
    yield server
    server.close()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A boto3 client on the moto server, with the environment the code under test reads."""
    import boto3

    env = s3_env(s3_endpoint, tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client("s3")
    bucket = "models-" + os.urandom(4).hex()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="mlp/model.onnx", Body=PAYLOAD)
    client.put_object(Bucket=bucket, Key="repo/mlp/1/model.onnx", Body=b"version one")
    client.put_object(Bucket=bucket, Key="repo/mlp/2/model.onnx", Body=b"version two")
    client.put_object(Bucket=bucket, Key="repo/mlp/", Body=b"")  # a console "folder" marker
    client.bucket = bucket
    return client


def s3_env(endpoint: str, tmp_path: Path) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }


# ---------------------------------------------------------------------------------------------
# Local paths and file://


def test_local_path_is_used_in_place(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(PAYLOAD)
    dest = tmp_path / "dest"
    assert fetch_model(str(model), dest) == model
    assert fetch_model(model.as_uri(), dest, sha256=PAYLOAD_SHA) == model
    assert not dest.exists()


def test_local_path_copied_when_asked(tmp_path: Path) -> None:
    model = tmp_path / "src" / "model.onnx"
    model.parent.mkdir()
    model.write_bytes(PAYLOAD)
    dest = tmp_path / "dest"
    got = fetch_model(f"{model.as_uri()}#sha256={PAYLOAD_SHA}", dest, copy_local=True)
    assert got == dest / "model.onnx"
    assert got.read_bytes() == PAYLOAD
    assert _listing(dest) == ["model.onnx"]


def test_local_directory_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "mlp" / "1").mkdir(parents=True)
    (repo / "mlp" / "1" / "model.onnx").write_bytes(b"x")
    assert fetch_model(str(repo), tmp_path / "dest") == repo
    copied = fetch_model(str(repo), tmp_path / "dest", copy_local=True)
    assert _listing(copied) == ["mlp", "mlp/1", "mlp/1/model.onnx"]
    with pytest.raises(FetchError, match="directory"):
        fetch_model(str(repo), tmp_path / "dest", sha256=PAYLOAD_SHA)


@pytest.mark.parametrize("form", ["path", "uri"])
def test_local_missing(tmp_path: Path, form: str) -> None:
    missing = tmp_path / "absent.onnx"
    uri = str(missing) if form == "path" else missing.as_uri()
    with pytest.raises(FetchError, match="no such file") as info:
        fetch_model(uri, tmp_path / "dest")
    assert str(missing) in str(info.value)


def test_local_bad_checksum(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(PAYLOAD)
    with pytest.raises(FetchError, match="sha256 mismatch"):
        fetch_model(str(model), tmp_path / "dest", sha256=WRONG_SHA, copy_local=True)
    assert _listing(tmp_path / "dest") == []


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="unsupported scheme 'ftp'"):
        fetch_model("ftp://host/model.onnx", tmp_path)
    with pytest.raises(FetchError, match="malformed sha256"):
        fetch_model("http://127.0.0.1:1/model.onnx#sha256=abc", tmp_path)
    with pytest.raises(FetchError, match="malformed URI"):
        fetch_model("http://[::1/model.onnx", tmp_path)
    with pytest.raises(FetchError, match="disagree"):
        fetch_model(f"http://127.0.0.1:1/m.onnx#sha256={PAYLOAD_SHA}", tmp_path, sha256=WRONG_SHA)


def test_redaction() -> None:
    assert redact_uri("https://user:secret@host/m.onnx?X-Amz-Signature=abc#sha256=1") == (
        "https://user:***@host/m.onnx?<redacted>"
    )
    assert redact_uri("s3://bucket/key") == "s3://bucket/key"
    a = cache_dir_for("http://h/a/model.onnx", Path("/c"))
    assert a == cache_dir_for("http://h/a/model.onnx#sha256=1", Path("/c"))
    assert a != cache_dir_for("http://h/b/model.onnx", Path("/c"))


# ---------------------------------------------------------------------------------------------
# http://


def test_http_download(http_server: HttpServer, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    got = fetch_model(f"{http_server.url}/model.onnx", dest)
    assert got == dest / "model.onnx"
    assert got.read_bytes() == PAYLOAD
    assert _listing(dest) == ["model.onnx"]


def test_http_checksum_and_cache(http_server: HttpServer, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    uri = f"{http_server.url}/model.onnx#sha256={PAYLOAD_SHA.upper()}"
    assert fetch_model(uri, dest).read_bytes() == PAYLOAD
    assert fetch_model(f"{http_server.url}/model.onnx", dest, sha256=PAYLOAD_SHA).read_bytes() == PAYLOAD
    assert http_server.requests == ["/model.onnx"]  # the verified copy on disk was reused


def test_http_redirect(http_server: HttpServer, tmp_path: Path) -> None:
    got = fetch_model(f"{http_server.url}/redirect/model.onnx", tmp_path / "dest")
    assert got.read_bytes() == PAYLOAD


def test_http_bad_checksum_leaves_nothing(http_server: HttpServer, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(FetchError, match=f"sha256 mismatch: expected {WRONG_SHA}, got {PAYLOAD_SHA}") as info:
        fetch_model(f"{http_server.url}/model.onnx#sha256={WRONG_SHA}", dest)
    assert f"{http_server.url}/model.onnx" in str(info.value)
    assert _listing(dest) == []


def test_http_404(http_server: HttpServer, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(FetchError, match="HTTP 404") as info:
        fetch_model(f"{http_server.url}/absent.onnx", dest)
    assert f"{http_server.url}/absent.onnx" in str(info.value)
    assert _listing(dest) == []


def test_http_truncated_body(http_server: HttpServer, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(FetchError, match="cannot fetch"):
        fetch_model(f"{http_server.url}/truncated/model.onnx", dest)
    assert _listing(dest) == []


def test_http_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchError, match="ConnectError") as info:
        fetch_model(f"http://127.0.0.1:{port}/model.onnx", tmp_path / "dest")
    assert f"127.0.0.1:{port}/model.onnx" in str(info.value)


# ---------------------------------------------------------------------------------------------
# s3://


def test_s3_object(s3: Any, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    got = fetch_model(f"s3://{s3.bucket}/mlp/model.onnx#sha256={PAYLOAD_SHA}", dest)
    assert got == dest / "model.onnx"
    assert got.read_bytes() == PAYLOAD
    assert _listing(dest) == ["model.onnx"]


def test_s3_prefix_tree(s3: Any, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    got = fetch_model(f"s3://{s3.bucket}/repo", dest)
    assert got == dest / "repo"
    assert _listing(got) == ["mlp", "mlp/1", "mlp/1/model.onnx", "mlp/2", "mlp/2/model.onnx"]
    assert (got / "mlp" / "2" / "model.onnx").read_bytes() == b"version two"
    s3.put_object(Bucket=s3.bucket, Key="repo/mlp/2/model.onnx", Body=b"version two, updated")
    assert fetch_model(f"s3://{s3.bucket}/repo/", dest) == got  # fetched again: replaced whole
    assert (got / "mlp" / "2" / "model.onnx").read_bytes() == b"version two, updated"
    assert _listing(dest)[0] == "repo"
    assert not [p for p in _listing(dest) if ".part" in p or ".old" in p]


def test_s3_names_match_the_operator_contract(s3: Any, tmp_path: Path) -> None:
    """DEST_DIR/<last path component, unsafe characters as "_">; a whole bucket lands in "model"."""
    s3.put_object(Bucket=s3.bucket, Key="odd dir/odd name%.onnx", Body=b"x")
    got = fetch_model(f"s3://{s3.bucket}/odd dir/odd name%.onnx", tmp_path / "dest")
    assert got == tmp_path / "dest" / "odd_name_.onnx"
    whole = fetch_model(f"s3://{s3.bucket}", tmp_path / "dest")
    assert whole == tmp_path / "dest" / "model"
    assert (whole / "mlp" / "model.onnx").read_bytes() == PAYLOAD


def test_s3_missing_object(s3: Any, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(FetchError, match=f"no object 'mlp/absent.onnx' in bucket '{s3.bucket}'"):
        fetch_model(f"s3://{s3.bucket}/mlp/absent.onnx", dest)
    assert _listing(dest) == []


def test_s3_missing_bucket(s3: Any, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="bucket 'no-such-bucket' does not exist"):
        fetch_model("s3://no-such-bucket/model.onnx", tmp_path / "dest")


def test_s3_bad_checksum_leaves_nothing(s3: Any, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(FetchError, match="sha256 mismatch"):
        fetch_model(f"s3://{s3.bucket}/mlp/model.onnx", dest, sha256=WRONG_SHA)
    assert _listing(dest) == []


def test_s3_unreachable_endpoint(s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(FetchError, match="EndpointConnectionError"):
        fetch_model(f"s3://{s3.bucket}/mlp/model.onnx", tmp_path / "dest")


# ---------------------------------------------------------------------------------------------
# The command the init container runs


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelserve_cli.main", "fetch", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_cli_http(http_server: HttpServer, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    done = _run_cli(f"{http_server.url}/model.onnx", str(dest), "--sha256", PAYLOAD_SHA)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(dest / "model.onnx")
    assert (dest / "model.onnx").read_bytes() == PAYLOAD


def test_cli_local_path_lands_in_dest(tmp_path: Path) -> None:
    model = tmp_path / "mlp.onnx"
    model.write_bytes(PAYLOAD)
    done = _run_cli(str(model), str(tmp_path / "dest"))
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).read_bytes() == PAYLOAD
    assert done.stdout.strip() == str(tmp_path / "dest" / "mlp.onnx")


def test_cli_failures(http_server: HttpServer, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    done = _run_cli(f"{http_server.url}/absent.onnx", str(dest))
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"modelserve fetch: error: cannot fetch {http_server.url}/absent.onnx: HTTP 404 File not found"
    ]
    done = _run_cli(f"{http_server.url}/model.onnx", str(dest), "--sha256", WRONG_SHA)
    assert done.returncode == 1
    assert "sha256 mismatch" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert _listing(dest) == []
    assert _run_cli().returncode == 2  # usage error


def test_cli_s3(s3_endpoint: str, s3: Any, tmp_path: Path) -> None:
    env = s3_env(s3_endpoint, tmp_path)
    dest = tmp_path / "dest"
    done = _run_cli(f"s3://{s3.bucket}/mlp/model.onnx", str(dest), env=env)
    assert done.returncode == 0, done.stderr
    assert (dest / "model.onnx").read_bytes() == PAYLOAD
    done = _run_cli(f"s3://{s3.bucket}/mlp/absent.onnx", str(dest), env=env)
    assert done.returncode == 1
    assert f"cannot fetch s3://{s3.bucket}/mlp/absent.onnx: no object" in done.stderr


# ---------------------------------------------------------------------------------------------
# End to end: `modelserve serve --model <remote URI>` serves what it fetched


def _infer_mlp(server: RunningServer, model: str = "mlp") -> np.ndarray:
    x = np.linspace(-1, 1, 2 * 64, dtype=np.float32).reshape(2, 64)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 64], "data": x.ravel().tolist()}]}
    response = requests.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "y" and output["shape"] == [2, 10]
    return np.array(output["data"], dtype=np.float32).reshape(2, 10)


def _expected_mlp(model_path: Path, ort_run: Any) -> np.ndarray:
    x = np.linspace(-1, 1, 2 * 64, dtype=np.float32).reshape(2, 64)
    return np.asarray(ort_run(model_path, {"x": x})["y"])


def _wait_exit(server: RunningServer, timeout: float = 120) -> int:
    return int(server.process.wait(timeout))


@pytest.mark.slow
def test_serve_from_http(
    http_server: HttpServer,
    tmp_path: Path,
    onnx_models: dict[str, Path],
    server_factory: ServerFactory,
    ort_run: Any,
) -> None:
    model = onnx_models["mlp"]
    shutil.copy(model, tmp_path / "www" / "mlp.onnx")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    env = {"MODELSERVE_CACHE_DIR": str(tmp_path / "cache")}
    server = server_factory("--model", f"{http_server.url}/mlp.onnx#sha256={digest}", env=env)
    np.testing.assert_allclose(_infer_mlp(server), _expected_mlp(model, ort_run), rtol=1e-5, atol=1e-6)
    assert "/mlp.onnx" in http_server.requests


@pytest.mark.slow
def test_serve_from_s3(
    s3_endpoint: str,
    s3: Any,
    tmp_path: Path,
    onnx_models: dict[str, Path],
    server_factory: ServerFactory,
    ort_run: Any,
) -> None:
    model = onnx_models["mlp"]
    s3.put_object(Bucket=s3.bucket, Key="prod/classifier.onnx", Body=model.read_bytes())
    env = {**s3_env(s3_endpoint, tmp_path), "MODELSERVE_CACHE_DIR": str(tmp_path / "cache")}
    server = server_factory("--model", f"mlp=s3://{s3.bucket}/prod/classifier.onnx", env=env)
    np.testing.assert_allclose(_infer_mlp(server), _expected_mlp(model, ort_run), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_serve_fails_cleanly_on_fetch_errors(
    http_server: HttpServer, s3_endpoint: str, s3: Any, tmp_path: Path, server_factory: ServerFactory
) -> None:
    env = {**s3_env(s3_endpoint, tmp_path), "MODELSERVE_CACHE_DIR": str(tmp_path / "cache")}
    cases = {
        f"{http_server.url}/model.onnx#sha256={WRONG_SHA}": "sha256 mismatch",
        f"{http_server.url}/absent.onnx": "HTTP 404",
        f"s3://{s3.bucket}/absent.onnx": "no object 'absent.onnx'",
    }
    for uri, cause in cases.items():
        server = server_factory("--model", f"m={uri}", env=env, wait_ready=False)
        assert _wait_exit(server) != 0
        logs = server.logs()
        assert f"cannot fetch {uri.split('#')[0]}: {cause}" in logs, logs
    assert not [p for p in _listing(tmp_path / "cache") if p.endswith(".part")]
