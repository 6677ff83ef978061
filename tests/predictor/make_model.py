"""Builds small image classifiers as ONNX files for the predictor's tests and benchmark.

The graph has the shape of an SN34 detector: image [N, 3, H, W] float32 -> conv -> relu -> conv
-> relu -> global average pool -> linear -> one logit per image ([N, 1]). Weights come from a
seeded generator, so two seeds give two models whose predictions differ (what the hot-swap test
needs), and the same seed always gives the same file.

    python make_model.py OUT.onnx [--seed N] [--size H W] [--fixed-batch] [--probability]
                                  [--width C] [--two-inputs]
"""
import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build(seed, size, fixed_batch, probability, width, two_inputs):
    rng = np.random.default_rng(seed)
    h, w = size
    c1, c2 = width, width * 2

    def init(name, shape, scale):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        init("w1", (c1, 3, 3, 3), 0.4),
        init("b1", (c1,), 0.1),
        init("w2", (c2, c1, 3, 3), 0.2),
        init("b2", (c2,), 0.1),
        init("w3", (1, c2), 1.0),
        init("b3", (1,), 0.1),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["logit" if not probability else "z"], transB=1),
    ]
    if probability:
        nodes.append(helper.make_node("Sigmoid", ["z"], ["logit"]))
    batch = 1 if fixed_batch else "batch"
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, h, w])]
    if two_inputs:
        inputs.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [batch, 1]))
    graph = helper.make_graph(
        nodes,
        "detector",
        inputs,
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, [batch, 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--size", type=int, nargs=2, default=[64, 64])
    p.add_argument("--fixed-batch", action="store_true")
    p.add_argument("--probability", action="store_true")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--two-inputs", action="store_true")
    a = p.parse_args()
    onnx.save(build(a.seed, a.size, a.fixed_batch, a.probability, a.width, a.two_inputs), a.out)


if __name__ == "__main__":
    main()
