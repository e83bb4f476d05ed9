"""Build an ONNX graph of a BERT encoder (all-MiniLM-L6-v2) straight from its safetensors weights.

No torch: the graph is written node by node with ``onnx.helper``. Inputs ``input_ids``, ``attention_mask``
and ``token_type_ids`` (int64, [batch, sequence]); output ``last_hidden_state`` (float32, [batch, sequence,
hidden]), the same interface as a ``torch.onnx`` export of ``BertModel``.

Two forms of the same arithmetic: plain ONNX operators (onnxruntime fuses the GELU and bias patterns
itself at ORT_ENABLE_ALL), or, with ``fused=True``, onnxruntime's own fused operators (``Attention``,
``SkipLayerNormalization``, ``BiasGelu``), which its quantiser turns into int8 ``QAttention`` and
``MatMulInteger`` kernels: 6% faster than quantising the plain form, measured on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MASKED = -10000.0  # added to the attention scores of padding (BERT's value; also onnxruntime Attention's)


class _Graph:
    """Nodes and initializers under construction; every helper returns the name of its output."""

    def __init__(self, weights: dict[str, np.ndarray], config: dict) -> None:
        self.weights, self.config = weights, config
        self.nodes: list = []
        self.initializers: list = []
        self.names: set[str] = set()

    def const(self, name: str, value: np.ndarray) -> str:
        """An initializer; a name already added is shared, not added twice."""
        from onnx import numpy_helper

        if name not in self.names:
            self.names.add(name)
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def weight(self, name: str) -> str:
        return self.const(name, self.weights[name])

    def kernel(self, prefix: str) -> str:
        """The weight of a linear layer, transposed for ``x @ W``."""
        return self.const(f"{prefix}.weight.T", self.weights[f"{prefix}.weight"].T)

    def op(self, op_type: str, *inputs: str, domain: str = "", **attributes: object) -> str:
        from onnx import helper

        output = f"{op_type}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, domain=domain, **attributes))
        return output

    def ms(self, op_type: str, *inputs: str, **attributes: object) -> str:
        """An onnxruntime contrib operator."""
        return self.op(op_type, *inputs, domain="com.microsoft", **attributes)

    def i64(self, name: str, *values: int) -> str:
        return self.const(name, np.array(values, dtype=np.int64))

    def f32(self, name: str, value: float) -> str:
        return self.const(name, np.array(value, dtype=np.float32))

    def dense(self, x: str, prefix: str) -> str:
        return self.op("Add", self.op("MatMul", x, self.kernel(prefix)), self.weight(f"{prefix}.bias"))

    def layer_norm(self, x: str, prefix: str) -> str:
        return self.op("LayerNormalization", x, self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias"),
                       axis=-1, epsilon=self.config["layer_norm_eps"])


def build_bert_onnx(model_dir: Path, fused: bool = False) -> bytes:
    """The serialized ONNX model for the ``config.json`` and ``model.safetensors`` in ``model_dir``."""
    import onnx
    from onnx import TensorProto, helper
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    g = _Graph(load_file(str(model_dir / "model.safetensors")), config)
    x = _embeddings(g)
    x = (_fused_layers if fused else _plain_layers)(g, x)
    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))

    names = ("input_ids", "attention_mask", "token_type_ids")
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"]) for name in names]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                           ["batch", "sequence", config["hidden_size"]])
    graph = helper.make_graph(g.nodes, "bert", inputs, [output], g.initializers)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if fused else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="sparky")
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _embeddings(g: _Graph) -> str:
    """LayerNorm(word + position + token type embeddings)."""
    zero, one, two = g.i64("zero", 0), g.i64("one", 1), g.i64("two", 2)
    sequence = g.op("Slice", g.op("Shape", "input_ids"), one, two)
    positions = g.op("Slice", g.weight("embeddings.position_embeddings.weight"), zero, sequence, zero)
    words = g.op("Gather", g.weight("embeddings.word_embeddings.weight"), "input_ids")
    types = g.op("Gather", g.weight("embeddings.token_type_embeddings.weight"), "token_type_ids")
    return g.layer_norm(g.op("Add", g.op("Add", words, positions), types), "embeddings.LayerNorm")


def _plain_layers(g: _Graph, x: str) -> str:
    """The encoder layers in standard ONNX operators."""
    from onnx import TensorProto

    hidden, heads = g.config["hidden_size"], g.config["num_attention_heads"]
    split_heads = g.i64("split_heads", 0, 0, heads, hidden // heads)
    merge_heads = g.i64("merge_heads", 0, 0, hidden)
    one, two = g.i64("one", 1), g.i64("two", 2)
    f_one, f_half = g.f32("f_one", 1.0), g.f32("f_half", 0.5)
    sqrt_head, sqrt_two = g.f32("sqrt_head", np.sqrt(hidden // heads)), g.f32("sqrt_two", np.sqrt(2.0))
    mask = g.op("Cast", g.op("Unsqueeze", g.op("Unsqueeze", "attention_mask", one), two), to=TensorProto.FLOAT)
    mask = g.op("Mul", g.op("Sub", f_one, mask), g.f32("masked", MASKED))  # [batch, 1, 1, sequence]

    for index in range(g.config["num_hidden_layers"]):
        p = f"encoder.layer.{index}."

        def heads_of(name: str, perm: list[int]) -> str:
            return g.op("Transpose", g.op("Reshape", g.dense(x, p + f"attention.self.{name}"), split_heads), perm=perm)

        q, k, v = heads_of("query", [0, 2, 1, 3]), heads_of("key", [0, 2, 3, 1]), heads_of("value", [0, 2, 1, 3])
        scores = g.op("Add", g.op("Div", g.op("MatMul", q, k), sqrt_head), mask)
        context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
        context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), merge_heads)
        x = g.layer_norm(g.op("Add", g.dense(context, p + "attention.output.dense"), x), p + "attention.output.LayerNorm")
        inner = g.dense(x, p + "intermediate.dense")
        gelu = g.op("Mul", g.op("Mul", inner, g.op("Add", g.op("Erf", g.op("Div", inner, sqrt_two)), f_one)), f_half)
        x = g.layer_norm(g.op("Add", g.dense(gelu, p + "output.dense"), x), p + "output.LayerNorm")
    return x


def _fused_layers(g: _Graph, x: str) -> str:
    """The encoder layers in onnxruntime's fused operators: the same arithmetic, fewer and larger kernels."""
    from onnx import TensorProto

    mask = g.op("Cast", "attention_mask", to=TensorProto.INT32)  # [batch, sequence] of 0/1
    for index in range(g.config["num_hidden_layers"]):
        p = f"encoder.layer.{index}."
        parts = [f"{p}attention.self.{name}" for name in ("query", "key", "value")]
        qkv = g.const(f"{p}qkv.weight.T", np.concatenate([g.weights[f"{part}.weight"].T for part in parts], axis=1))
        qkv_bias = g.const(f"{p}qkv.bias", np.concatenate([g.weights[f"{part}.bias"] for part in parts]))
        context = g.ms("Attention", x, qkv, qkv_bias, mask, num_heads=g.config["num_attention_heads"],
                       mask_filter_value=MASKED)
        x = _dense_residual_norm(g, context, x, p + "attention.output")
        inner = g.ms("BiasGelu", g.op("MatMul", x, g.kernel(p + "intermediate.dense")),
                     g.weight(p + "intermediate.dense.bias"))
        x = _dense_residual_norm(g, inner, x, p + "output")
    return x


def _dense_residual_norm(g: _Graph, x: str, residual: str, prefix: str) -> str:
    """LayerNorm(x @ W + b + residual) as one SkipLayerNormalization after the MatMul."""
    return g.ms("SkipLayerNormalization", g.op("MatMul", x, g.kernel(f"{prefix}.dense")), residual,
                g.weight(f"{prefix}.LayerNorm.weight"), g.weight(f"{prefix}.LayerNorm.bias"),
                g.weight(f"{prefix}.dense.bias"), epsilon=g.config["layer_norm_eps"])
