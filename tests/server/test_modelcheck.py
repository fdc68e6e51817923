"""Models checked before they are served (issue 10): at fetch (``modelserve fetch --check``, the init
container) and at server load, with a one-line reason, a non-zero exit and the termination message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import onnx
import pytest
from serverlib import ServerFactory, build_mlp, build_static

from modelserve_server import fetch
from modelserve_server.errors import FetchError
from modelserve_server.modelcheck import ModelInvalid, check_model, runtime_max_opset

REPO_ROOT = Path(__file__).resolve().parents[2]


def _too_new_opset(path: Path) -> Path:
    model = onnx.load(str(build_mlp(path)))
    model.opset_import[0].version = 999
    onnx.save(model, str(path))
    return path


def _external_data(path: Path) -> Path:
    model = onnx.load(str(build_mlp(path)))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="mlp.weights", size_threshold=0)  # fmt: skip
    return path


@pytest.fixture()
def bad_models(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (model file, a fragment its one-line reason must contain)."""
    text = tmp_path / "text" / "model.onnx"
    text.parent.mkdir()
    text.write_bytes(b"this is not an onnx model")
    opset = _too_new_opset(tmp_path / "opset" / "model.onnx")
    missing = _external_data(tmp_path / "missing" / "model.onnx")
    (missing.parent / "mlp.weights").unlink()
    escaping = _external_data(tmp_path / "escaping" / "model.onnx")
    model = onnx.load(str(escaping), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../outside.bin"
    onnx.save(model, str(escaping))
    return {
        "text": (text, "not an ONNX model"),
        "opset": (opset, "opset 999 is newer than this ONNX Runtime supports"),
        "missing-external": (missing, "external data file 'mlp.weights' of tensor"),
        "escaping-external": (escaping, "outside the model's directory"),
    }


def test_check_model_rules(bad_models: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    assert runtime_max_opset() is not None
    for name, (path, fragment) in bad_models.items():
        with pytest.raises(ModelInvalid) as info:
            check_model(path)
        assert fragment in str(info.value), name
        assert "\n" not in str(info.value)
    good = _external_data(tmp_path / "good" / "model.onnx")
    summary = check_model(good, require_batch_dim=True)
    assert summary.opsets["ai.onnx"] == 17 and summary.external
    static = build_static(tmp_path / "static.onnx")
    check_model(static)
    with pytest.raises(ModelInvalid, match="dynamic first dimension, but tensor 'x' has shape \\[4, 8\\]"):
        check_model(static, require_batch_dim=True)


def _fetch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelserve_cli.main", "fetch", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env={**os.environ, **env}, check=False,
    )  # fmt: skip


def test_fetch_check_refuses_with_one_line_and_termination_message(
    bad_models: dict[str, tuple[Path, str]], tmp_path: Path
) -> None:
    log = tmp_path / "termination-log"
    env = {"MODELSERVE_TERMINATION_LOG": str(log)}
    for name, (path, fragment) in bad_models.items():
        if name == "missing-external":  # fetch copies only the file it names; checked in place below
            continue
        done = _fetch(str(path), str(tmp_path / f"dest-{name}"), "--check", env=env)
        assert done.returncode == 1, (name, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (name, done.stderr)
        assert log.read_text().startswith("ModelInvalid: ") and fragment in log.read_text()
    # A directory (an s3:// prefix or a model repository) is checked file by file.
    missing_dir = bad_models["missing-external"][0].parent
    done = _fetch(str(missing_dir), str(tmp_path / "dest-dir"), "--check", env=env)
    assert done.returncode == 1 and "mlp.weights" in done.stderr, done.stderr
    static = build_static(tmp_path / "static.onnx")
    done = _fetch(str(static), str(tmp_path / "dest-static"), "--check", "--require-batch-dim", env=env)
    assert done.returncode == 1 and "dynamic first dimension" in done.stderr
    good = build_mlp(tmp_path / "mlp.onnx")
    done = _fetch(str(good), str(tmp_path / "dest-good"), "--check", "--require-batch-dim", env=env)
    assert done.returncode == 0, done.stderr


def test_serve_refuses_an_invalid_model_with_its_reason(
    bad_models: dict[str, tuple[Path, str]], server_factory: ServerFactory, tmp_path: Path
) -> None:
    log = tmp_path / "termination-log"
    for name in ("opset", "missing-external"):
        path, fragment = bad_models[name]
        server = server_factory("--model", f"m={path}", env={"MODELSERVE_TERMINATION_LOG": str(log)},
                                wait_ready=False)  # fmt: skip
        assert server.process.wait(120) == 1
        assert "start-up failed" in server.logs() and fragment in server.logs(), server.logs()
        message = log.read_text()
        assert message.startswith("ModelInvalid: ") and fragment in message and "\n" not in message


def test_https_to_http_redirect_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "https" and request.url.path == "/model.onnx":
            return httpx.Response(302, headers={"Location": "http://models.example/model.onnx"})
        if request.url.scheme == "https" and request.url.path == "/same.onnx":
            return httpx.Response(302, headers={"Location": "https://models.example/final.onnx"})
        return httpx.Response(200, content=b"weights")

    monkeypatch.setattr(fetch, "HTTP_TRANSPORT", httpx.MockTransport(handler))
    with pytest.raises(FetchError, match="refusing a redirect from https to http"):
        fetch.fetch_model("https://models.example/model.onnx", tmp_path / "dest")
    assert not list((tmp_path / "dest").glob("*")) if (tmp_path / "dest").exists() else True
    got = fetch.fetch_model("https://models.example/same.onnx", tmp_path / "dest")
    assert got.read_bytes() == b"weights"


def test_fetch_check_writes_the_signature_on_success(tmp_path: Path) -> None:
    """The success path's termination message is the signature the operator shows in the status."""
    import hashlib
    import json

    log = tmp_path / "termination-log"
    good = build_mlp(tmp_path / "mlp.onnx")
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    for extra in ([], ["--sha256", digest]):  # hashed here, or the digest the fetch verified
        log.unlink(missing_ok=True)
        done = _fetch(str(good), str(tmp_path / "dest"), "--check", *extra,
                      env={"MODELSERVE_TERMINATION_LOG": str(log)})  # fmt: skip
        assert done.returncode == 0, done.stderr
        message = log.read_text()
        assert message.startswith("ModelSignature: {") and "\n" not in message
        body = json.loads(message.removeprefix("ModelSignature: "))
        assert body == {"models": [{
            "file": "mlp.onnx", "sha256": digest, "opset": 17,
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 10]}],
        }]}  # fmt: skip
    # Without --check nothing is read and nothing is written.
    log.unlink()
    done = _fetch(str(good), str(tmp_path / "dest2"), env={"MODELSERVE_TERMINATION_LOG": str(log)})
    assert done.returncode == 0, done.stderr
    assert not log.exists()


def test_signature_message_is_cut_to_valid_json_within_the_kubelets_limit() -> None:
    import json

    from modelserve_server.modelcheck import signature_message

    def tensor(i: int) -> dict[str, object]:
        return {"name": f"past_key_values.{i}.key", "datatype": "FP16", "shape": [-1, 32, -1, 128]}

    model = {"file": "decoder.onnx", "sha256": "a" * 64, "opset": 17,
             "inputs": [tensor(i) for i in range(5000)], "outputs": [tensor(i) for i in range(300)]}
    message = signature_message([model])
    assert len(message.encode()) <= 4096 and message.startswith("ModelSignature: ")
    (cut,) = json.loads(message.removeprefix("ModelSignature: "))["models"]
    assert cut["truncated"] is True and (cut["inputCount"], cut["outputCount"]) == (5000, 300)
    assert cut["inputs"] == model["inputs"][: len(cut["inputs"])] and cut["inputs"]  # a prefix, in order
    assert (cut["file"], cut["sha256"], cut["opset"]) == ("decoder.onnx", "a" * 64, 17)
    small = {**model, "inputs": model["inputs"][:2], "outputs": model["outputs"][:1]}
    # Many model files (a repository): whole models go once no tensor is left.
    many = signature_message([dict(small, file=f"m{i}/model.onnx") for i in range(200)])
    body = json.loads(many.removeprefix("ModelSignature: "))
    assert len(many) <= 4096 and body["truncated"] is True and body["modelCount"] == 200
    assert 0 < len(body["models"]) < 200
    # What fits is left alone.
    whole = json.loads(signature_message([small]).removeprefix("ModelSignature: "))
    assert whole == {"models": [small]}


def test_signature_datatypes_are_the_servers_v2_names() -> None:
    """One mapping ONNX -> V2 (``datatypes.ONNX_TO_V2``): the signature's table must agree with it."""
    from modelserve_server.datatypes import ONNX_TO_V2
    from modelserve_server.modelcheck import ELEM_TYPE_V2

    onnx_names = {"FLOAT": "float", "DOUBLE": "double", "FLOAT16": "float16", "STRING": "string"}
    for number, v2 in ELEM_TYPE_V2.items():
        name = onnx.TensorProto.DataType.Name(number)
        key = f"tensor({onnx_names.get(name, name.lower())})"
        assert ONNX_TO_V2.get(key, v2) == v2, (name, v2)
        assert key in ONNX_TO_V2 or v2 == "BFLOAT16", name
