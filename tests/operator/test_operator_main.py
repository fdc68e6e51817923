"""``modelserve operator``'s configuration: flags over environment, and one identity for kopf
and the client (a ServiceAccount token kubeconfig, as the e2e tests use)."""

from __future__ import annotations

import logging
import pathlib
import socket
from collections.abc import Iterator

import pytest
import yaml

from modelserve_operator import main
from modelserve_operator.handlers import connection_info, owner_of
from modelserve_operator.kube import Kube, NotAllowed, load_configuration, resource_for
from modelserve_operator.main import parse_args


def test_flags_override_environment() -> None:
    env = {"MODELSERVE_WATCH_NAMESPACES": "a,b", "MODELSERVE_SERVER_IMAGE": "env/img:1",
           "MODELSERVE_LOG_FORMAT": "text"}
    options = parse_args([], env)
    assert options.config.watch_namespaces == ("a", "b")
    assert options.config.server_image == "env/img:1" and options.config.log_format == "text"

    flags = ["-n", "ml", "-n", "prod", "--server-image", "flag/img:2", "--log-format", "json",
             "--gpu-resource", "amd.com/gpu", "--liveness-port", "0", "--metrics-port", "9100"]
    options = parse_args(flags, env)
    assert options.config.watch_namespaces == ("ml", "prod")
    assert options.config.server_image == "flag/img:2" and options.config.log_format == "json"
    assert options.config.gpu_resource == "amd.com/gpu"
    assert (options.liveness_port, options.metrics_port) == (0, 9100)

    assert parse_args(["--all-namespaces"], env).config.watch_namespaces == ()


def test_namespace_and_all_namespaces_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        parse_args(["-n", "a", "-A"], {})


def test_token_kubeconfig_gives_kopf_and_the_client_the_same_identity(tmp_path: pathlib.Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "op",
        "clusters": [{"name": "local", "cluster": {"server": "https://127.0.0.1:6443",
                                                   "insecure-skip-tls-verify": True}}],
        "users": [{"name": "sa", "user": {"token": "sa-token-123"}}],
        "contexts": [{"name": "op", "context": {"cluster": "local", "user": "sa"}}],
    }))
    configuration = load_configuration(str(kubeconfig))
    info = connection_info(configuration)
    assert info.server == "https://127.0.0.1:6443"
    assert (info.scheme, info.token) == ("Bearer", "sa-token-123")
    assert info.insecure is True
    Kube(configuration).close()


async def test_calls_outside_the_rbac_table_fail_before_the_request() -> None:
    kube = Kube(load_configuration_for_tests())
    try:
        with pytest.raises(NotAllowed):
            await kube.request("delete", resource_for("v1", "Pod"), namespace="x", name="y")
        with pytest.raises(NotAllowed):
            resource_for("v1", "Secret")
    finally:
        kube.close()


def load_configuration_for_tests() -> object:
    import kubernetes.client

    configuration = kubernetes.client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # never contacted: the RBAC check comes first
    return configuration


def test_owner_of_children_and_pods() -> None:
    child = {"metadata": {"ownerReferences": [
        {"apiVersion": "serving.modelserve.io/v1alpha1", "kind": "ModelDeployment", "name": "iris"}]}}
    pod = {"metadata": {"labels": {"serving.modelserve.io/modeldeployment": "iris"},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet"}]}}
    assert owner_of(child) == owner_of(pod) == "iris"
    assert owner_of({"metadata": {}}) is None


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """``main.run`` configures logging as the process would (kopf puts a handler on the root logger
    bound to the sys.stderr of the moment, here capsys's). Put the loggers back afterwards: a handler
    left on a closed capture stream made later tests' operator threads print "Logging error"."""
    touched = [logging.getLogger(), logging.getLogger("asyncio")]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in touched]
    yield
    for lg, handlers, level, propagate in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


def test_a_taken_metrics_port_is_one_clear_line_and_exit_2(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], restored_logging: None
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main.run(["--kubeconfig", str(kubeconfig), "--metrics-port", str(port),
                         "--liveness-port", "0", "--bind-address", "127.0.0.1"])
    assert code == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err
