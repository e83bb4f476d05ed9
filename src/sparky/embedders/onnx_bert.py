"""Build an fp32 ONNX graph of a BERT encoder (all-MiniLM-L6-v2) straight from its safetensors weights.

No torch: the graph is written node by node with ``onnx.helper``. Inputs ``input_ids``, ``attention_mask``
and ``token_type_ids`` (int64, [batch, sequence]); output ``last_hidden_state`` (float32, [batch, sequence,
hidden]), the same interface as a ``torch.onnx`` export of ``BertModel``. onnxruntime fuses the GELU and
bias patterns itself when the session is created with ORT_ENABLE_ALL.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def build_bert_onnx(model_dir: Path) -> bytes:
    """The serialized ONNX model for the ``config.json`` and ``model.safetensors`` in ``model_dir``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    weights = load_file(str(model_dir / "model.safetensors"))
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    eps = config["layer_norm_eps"]
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(op_type: str, *inputs: str, **attributes: object) -> str:
        output = f"{op_type}_{len(nodes)}"
        nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attributes))
        return output

    def weight(name: str) -> str:
        return const(name, weights[name])

    def dense(x: str, prefix: str) -> str:
        kernel = const(f"{prefix}.weight.T", weights[f"{prefix}.weight"].T)
        return op("Add", op("MatMul", x, kernel), weight(f"{prefix}.bias"))

    def layer_norm(x: str, prefix: str) -> str:
        return op("LayerNormalization", x, weight(f"{prefix}.weight"), weight(f"{prefix}.bias"), axis=-1, epsilon=eps)

    def i64(name: str, *values: int) -> str:
        return const(name, np.array(values, dtype=np.int64))

    def f32(name: str, value: float) -> str:
        return const(name, np.array(value, dtype=np.float32))

    zero, one, two = i64("zero", 0), i64("one", 1), i64("two", 2)
    split_heads, merge_heads = i64("split_heads", 0, 0, heads, hidden // heads), i64("merge_heads", 0, 0, hidden)
    f_one, f_half = f32("f_one", 1.0), f32("f_half", 0.5)
    sqrt_head, sqrt_two = f32("sqrt_head", np.sqrt(hidden // heads)), f32("sqrt_two", np.sqrt(2.0))

    sequence = op("Slice", op("Shape", "input_ids"), one, two)
    positions = op("Slice", weight("embeddings.position_embeddings.weight"), zero, sequence, zero)
    words = op("Gather", weight("embeddings.word_embeddings.weight"), "input_ids")
    types = op("Gather", weight("embeddings.token_type_embeddings.weight"), "token_type_ids")
    x = layer_norm(op("Add", op("Add", words, positions), types), "embeddings.LayerNorm")

    mask = op("Cast", op("Unsqueeze", op("Unsqueeze", "attention_mask", one), two), to=TensorProto.FLOAT)
    mask = op("Mul", op("Sub", f_one, mask), f32("masked", -10000.0))  # [batch, 1, 1, sequence]

    for index in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{index}."
        q = op("Transpose", op("Reshape", dense(x, p + "attention.self.query"), split_heads), perm=[0, 2, 1, 3])
        k = op("Transpose", op("Reshape", dense(x, p + "attention.self.key"), split_heads), perm=[0, 2, 3, 1])
        v = op("Transpose", op("Reshape", dense(x, p + "attention.self.value"), split_heads), perm=[0, 2, 1, 3])
        scores = op("Add", op("Div", op("MatMul", q, k), sqrt_head), mask)
        context = op("MatMul", op("Softmax", scores, axis=-1), v)
        context = op("Reshape", op("Transpose", context, perm=[0, 2, 1, 3]), merge_heads)
        x = layer_norm(op("Add", dense(context, p + "attention.output.dense"), x), p + "attention.output.LayerNorm")
        inner = dense(x, p + "intermediate.dense")
        gelu = op("Mul", op("Mul", inner, op("Add", op("Erf", op("Div", inner, sqrt_two)), f_one)), f_half)
        x = layer_norm(op("Add", dense(gelu, p + "output.dense"), x), p + "output.LayerNorm")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))

    names = ("input_ids", "attention_mask", "token_type_ids")
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"]) for name in names]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden])
    graph = helper.make_graph(nodes, "bert", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="sparky")
    onnx.checker.check_model(model)
    return model.SerializeToString()
