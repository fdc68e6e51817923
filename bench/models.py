"""The two benchmark models, built from numpy weights with the `onnx` helper API, and their FLOP counts.

Why generated rather than downloaded: the machine has no internet beyond package registries, and the benchmark
must be reproducible bit for bit. The weights are seeded random (He-scaled so activations stay finite through
the network); their values do not change the cost of inference, only the shapes do.

- `mlp`: [N,64] -> 256 -> 256 -> 128 -> 10, ReLU between dense layers. Tiny on purpose: a request costs
  microseconds of compute, so what the benchmark measures is the server's per-request overhead.
- `cnn`: a ResNet-style network on [N,3,224,224] (7x7 stem, max pool, four stages of two basic blocks with
  identity/1x1 projection shortcuts, global average pool, dense head). Batch norm is taken as already folded
  into the convolutions, as an exported inference graph has it. The width is chosen so that one image costs
  ~1.3 GFLOP (a multiply-add counted as two FLOPs); `flops_per_item` counts it from the graph itself.

Both models have a dynamic first dimension named `batch`, so a dynamic batcher may concatenate requests.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"
CNN_WIDTH = 38  # base channel count of the first stage; gives ~1.3 GFLOP/image (printed by `flops_per_item`)


@dataclass(frozen=True)
class ModelSpec:
    """What the load generator and the in-process baseline need to know about a model."""

    name: str
    path: Path
    item_shape: tuple[int, ...]  # shape of one item, without the batch dimension
    flops_per_item: int


class _Builder:
    """Accumulates nodes and initializers with unique names; a tiny layer over `onnx.helper`."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def _name(self, kind: str) -> str:
        self._n += 1
        return f"{kind}_{self._n}"

    def _const(self, kind: str, array: np.ndarray) -> str:
        name = self._name(kind)
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def dense(self, x: str, fan_in: int, fan_out: int, relu: bool, out: str | None = None) -> str:
        w = self._const("w", self.rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in))
        b = self._const("b", self.rng.standard_normal(fan_out) * 0.01)
        y = self.node("Gemm", [x, w, b])
        if relu:
            y = self.node("Relu", [y])
        if out is not None:
            self.nodes.append(helper.make_node("Identity", [y], [out]))
            return out
        return y

    def conv(self, x: str, c_in: int, c_out: int, k: int, stride: int, relu: bool) -> str:
        fan_in = c_in * k * k
        w = self._const("w", self.rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / fan_in))
        b = self._const("b", self.rng.standard_normal(c_out) * 0.01)
        pad = k // 2
        y = self.node("Conv", [x, w, b], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
        return self.node("Relu", [y]) if relu else y

    def basic_block(self, x: str, c_in: int, c_out: int, stride: int) -> str:
        y = self.conv(x, c_in, c_out, 3, stride, relu=True)
        y = self.conv(y, c_out, c_out, 3, 1, relu=False)
        shortcut = x if (stride == 1 and c_in == c_out) else self.conv(x, c_in, c_out, 1, stride, relu=False)
        return self.node("Relu", [self.node("Add", [y, shortcut])])

    def bottleneck(self, x: str, c_in: int, mid: int, stride: int) -> str:
        """ResNet-50's block: 1x1 reduce, 3x3 (carrying the stride), 1x1 expand to 4 x mid, plus shortcut."""
        y = self.conv(x, c_in, mid, 1, 1, relu=True)
        y = self.conv(y, mid, mid, 3, stride, relu=True)
        y = self.conv(y, mid, 4 * mid, 1, 1, relu=False)
        same = stride == 1 and c_in == 4 * mid
        shortcut = x if same else self.conv(x, c_in, 4 * mid, 1, stride, relu=False)
        return self.node("Relu", [self.node("Add", [y, shortcut])])


def _model(b: _Builder, name: str, item_shape: tuple[int, ...], out_dim: int) -> onnx.ModelProto:
    inp = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", *item_shape])
    out = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", out_dim])
    graph = helper.make_graph(b.nodes, name, [inp], [out], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bench")
    model.ir_version = 8  # readable by every ONNX Runtime >= 1.14
    onnx.checker.check_model(model)
    return model


def build_mlp() -> onnx.ModelProto:
    b = _Builder(seed=1)
    x = b.dense(INPUT_NAME, 64, 256, relu=True)
    x = b.dense(x, 256, 256, relu=True)
    x = b.dense(x, 256, 128, relu=True)
    b.dense(x, 128, 10, relu=False, out=OUTPUT_NAME)
    return _model(b, "mlp", (64,), 10)


def build_cnn(width: int = CNN_WIDTH) -> onnx.ModelProto:
    b = _Builder(seed=2)
    x = b.conv(INPUT_NAME, 3, width, 7, 2, relu=True)  # 112x112
    x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 56x56
    c_in = width
    for stage, mult in enumerate((1, 2, 4, 8)):
        c_out = width * mult
        x = b.basic_block(x, c_in, c_out, 1 if stage == 0 else 2)
        x = b.basic_block(x, c_out, c_out, 1)
        c_in = c_out
    x = b.node("GlobalAveragePool", [x])
    x = b.node("Flatten", [x], axis=1)
    b.dense(x, c_in, 1000, relu=False, out=OUTPUT_NAME)
    return _model(b, "cnn", (3, 224, 224), 1000)


def build_resnet50(width: int = 64) -> onnx.ModelProto:
    """ResNet-50's topology (bottleneck stages of 3, 4, 6, 3 blocks) on [N,3,224,224]; width 64 is the
    real network (~25.6 M parameters, ~8.2 GFLOP/image); bench/gpu uses a small width for its CPU dry run."""
    b = _Builder(seed=3)
    x = b.conv(INPUT_NAME, 3, width, 7, 2, relu=True)  # 112x112
    x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 56x56
    c_in = width
    for stage, blocks in enumerate((3, 4, 6, 3)):
        mid = width * 2**stage
        for i in range(blocks):
            x = b.bottleneck(x, c_in, mid, 2 if (i == 0 and stage > 0) else 1)
            c_in = 4 * mid
    x = b.node("GlobalAveragePool", [x])
    x = b.node("Flatten", [x], axis=1)
    b.dense(x, c_in, 1000, relu=False, out=OUTPUT_NAME)
    return _model(b, "resnet50", (3, 224, 224), 1000)


def write_model(model: onnx.ModelProto, path: Path) -> None:
    """Write `model` to `path` atomically, only when its bytes changed."""
    data = model.SerializeToString()
    if not path.exists() or path.read_bytes() != data:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)


def _dims(vi: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]


def flops_per_item(model: onnx.ModelProto) -> int:
    """FLOPs of one item (batch 1): 2 per multiply-add of Conv and Gemm, 1 per element of Add/Relu/pools."""
    inferred = shape_inference.infer_shapes(model)
    shapes = {
        vi.name: _dims(vi)
        for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
    }
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    total = 0
    for node in inferred.graph.node:
        out = shapes.get(node.output[0])
        if out is None:
            continue
        out_elems = int(np.prod(out))
        if node.op_type == "Conv":
            w = shapes[node.input[1]]  # [C_out, C_in/group, kH, kW]
            total += 2 * out_elems * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            total += 2 * out_elems * shapes[node.input[1]][0]
        elif node.op_type in ("Add", "Relu"):
            total += out_elems
        elif node.op_type in ("MaxPool", "AveragePool"):
            total += out_elems * 9
        elif node.op_type == "GlobalAveragePool":
            total += int(np.prod(shapes[node.input[0]]))
    return total


def ensure_models(directory: Path) -> dict[str, ModelSpec]:
    """Writes both models under `directory` (once; rebuilt if missing) and returns their specs."""
    directory.mkdir(parents=True, exist_ok=True)
    specs: dict[str, ModelSpec] = {}
    for name, build, item_shape in (("mlp", build_mlp, (64,)), ("cnn", build_cnn, (3, 224, 224))):
        path = directory / f"{name}.onnx"
        model = build()
        write_model(model, path)  # rebuilt when the definition changed
        specs[name] = ModelSpec(name, path, item_shape, flops_per_item(model))
    return specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("directory", type=Path, nargs="?", default=Path("bench/.models"))
    args = parser.parse_args(argv)
    for spec in ensure_models(args.directory).values():
        print(
            f"{spec.name}: {spec.path} item {list(spec.item_shape)} "
            f"{spec.flops_per_item / 1e6:.3f} MFLOP/item"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
