"""FP16 as graph precision: float16 weights and compute, a few ops kept in float32.

TensorRT 11 takes precision from the ONNX itself, so FP16 has to be in the graph. This is a small
cast pass of our own: onnxconverter_common's converter produced invalid graphs ("Conv bound to
different types float16 and float") once LayerNormalization/Softmax were block-listed, and
ModelOpt AutoCast drags in onnxruntime-gpu. LayerNorm, Softmax and reductions stay float32
because their sums over a whole row/channel overflow or lose the small terms in float16. The
graph's inputs and outputs stay float32 (a Cast at each end), so callers never see float16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

DEFAULT_KEEP_FLOAT32_OPS = (
    "LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2",
    "ReduceLogSumExp", "Pow", "Sqrt", "Exp",
)
# inputs that the ONNX spec types as float32 whatever the data type (scales, roi)
_FLOAT32_SLOTS = {"Resize": {1, 2}, "Upsample": {1}}
# ops whose output dtype comes from an attribute
_DTYPE_ATTR = {"EyeLike": "dtype", "RandomNormal": "dtype", "RandomUniform": "dtype",
               "RandomNormalLike": "dtype", "RandomUniformLike": "dtype"}
_FP16_MAX = float(np.finfo(np.float16).max)


def _to_fp16_tensor(t, name: str | None = None):
    from onnx import numpy_helper

    arr = numpy_helper.to_array(t).astype(np.float32)
    # clip instead of overflowing to inf: a weight past 65504 is a broken model either way
    out = numpy_helper.from_array(np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16), name or t.name)
    return out


def fp16_from_onnx(
    fp32_onnx,
    out_path,
    keep_float32_ops: Iterable[str] = DEFAULT_KEEP_FLOAT32_OPS,
    keep_float32_nodes: Iterable[str] = (),
) -> Path:
    """FP32 ONNX (path or ModelProto) -> FP16 ONNX at ``out_path`` (float32 I/O); returns the path.

    Nodes whose op type is in ``keep_float32_ops`` (or whose name is in ``keep_float32_nodes``)
    compute in float32 with Casts around them; everything else computes in float16.
    """
    import onnx
    from onnx import TensorProto, helper

    from coatnet_deploy.errors import UserError
    from coatnet_deploy.precision.plan import load_named

    model = load_named(fp32_onnx)
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for n in model.graph.node for a in n.attribute):
        raise UserError("the ONNX graph has control flow (If/Loop/Scan)",
                        "the FP16 cast pass handles flat graphs only",
                        "export without data-dependent control flow")
    model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16

    types: dict[str, int] = {}
    for vi in (*g.input, *g.value_info, *g.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        types[t.name] = t.data_type
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
                elif a.name in ("value_float", "value_floats"):
                    types[n.output[0]] = FLOAT
    untyped = [o for n in g.node for o in n.output if o and o not in types]
    if untyped:
        raise UserError(f"cannot type {len(untyped)} tensor(s) for FP16, e.g. {untyped[0]!r}",
                        "ONNX shape inference left them without a dtype",
                        "simplify the graph (onnxsim) before converting")

    keep_ops, keep_names = set(keep_float32_ops), set(keep_float32_nodes)
    kept = {n.name for n in g.node if n.op_type in keep_ops or n.name in keep_names}
    graph_inputs = {i.name for i in g.input}
    graph_outputs = [o.name for o in g.output]

    # Which float32 initializers stay float32: those read only by kept nodes / float32 slots.
    readers: dict[str, list[tuple]] = {}
    for n in g.node:
        for i, name in enumerate(n.input):
            readers.setdefault(name, []).append((n, i))

    def fp32_slot(n, i) -> bool:
        return n.name in kept or i in _FLOAT32_SLOTS.get(n.op_type, ())

    new_inits = []
    fp32_consts: set[str] = set()
    for t in g.initializer:
        if t.data_type == FLOAT and not all(fp32_slot(n, i) for n, i in readers.get(t.name, [])):
            new_inits.append(_to_fp16_tensor(t))
        else:
            if t.data_type == FLOAT:
                fp32_consts.add(t.name)
            new_inits.append(t)
    del g.initializer[:]
    g.initializer.extend(new_inits)

    new_nodes = []
    counter = [0]

    def fresh(base: str) -> str:
        counter[0] += 1
        return f"{base}__fp16cast{counter[0]}"

    # float16 name -> float32 name of the same value, to avoid Cast(16)->Cast(32) round trips
    fp32_twin: dict[str, str] = {}
    cast_cache: dict[tuple[str, int], str] = {}

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in cast_cache:
            out = fresh(name)
            new_nodes.append(helper.make_node("Cast", [name], [out], name=fresh("Cast_" + name), to=to))
            cast_cache[key] = out
        return cast_cache[key]

    # graph inputs: float32 outside, float16 inside
    input_fp16: dict[str, str] = {}
    for name in graph_inputs:
        if types.get(name) == FLOAT:
            input_fp16[name] = None  # created lazily, only if a float16 consumer exists
    renamed_outputs: dict[str, str] = {}
    for name in graph_outputs:
        if types.get(name) == FLOAT:
            renamed_outputs[name] = fresh(name)

    def out_name(name: str) -> str:
        return renamed_outputs.get(name, name)

    def half_in(name: str) -> str:
        if name in input_fp16:
            if input_fp16[name] is None:
                input_fp16[name] = cast(name, HALF)
            return input_fp16[name]
        return out_name_of_internal(name)

    produced_as_output = set(renamed_outputs)

    def out_name_of_internal(name: str) -> str:
        # a graph output read inside the graph: read its internal (float16) twin
        return renamed_outputs.get(name, name) if name in produced_as_output else name

    for n in g.node:
        node = onnx.NodeProto()
        node.CopyFrom(n)
        is_float = [bool(x) and types.get(x) == FLOAT for x in n.input]
        if n.name in kept:
            for i, x in enumerate(n.input):
                if not is_float[i] or x in fp32_consts:
                    continue
                if x in graph_inputs:
                    continue  # already float32
                internal = out_name_of_internal(x)
                node.input[i] = fp32_twin.get(internal) or cast(internal, FLOAT)
            for j, o in enumerate(n.output):
                if o and types.get(o) == FLOAT:
                    tmp = fresh(o + "_fp32")
                    node.output[j] = tmp
                    half = out_name(o)
                    new_nodes.append(helper.make_node("Cast", [tmp], [half], name=fresh("Cast_" + o), to=HALF))
                    fp32_twin[half] = tmp
            new_nodes.append(node)  # order is restored by _toposort below
            continue
        for i, x in enumerate(n.input):
            if not x:
                continue
            if i in _FLOAT32_SLOTS.get(n.op_type, ()):
                if is_float[i] and x not in fp32_consts and x not in graph_inputs:
                    node.input[i] = cast(out_name_of_internal(x), FLOAT)
                continue
            if is_float[i]:
                node.input[i] = half_in(x)
        for j, o in enumerate(n.output):
            if o in renamed_outputs:
                node.output[j] = renamed_outputs[o]
        for a in node.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
                a.i = HALF
            elif a.name == _DTYPE_ATTR.get(n.op_type) and a.i == FLOAT:
                a.i = HALF
            elif n.op_type in ("Constant", "ConstantOfShape") and a.name == "value" and a.t.data_type == FLOAT:
                a.t.CopyFrom(_to_fp16_tensor(a.t, a.t.name))
            elif n.op_type == "Constant" and a.name == "value_float":
                a.CopyFrom(helper.make_attribute(
                    "value", _to_fp16_tensor(onnx.numpy_helper.from_array(np.array(a.f, np.float32)))))
            elif n.op_type == "Constant" and a.name == "value_floats":
                a.CopyFrom(helper.make_attribute(
                    "value", _to_fp16_tensor(onnx.numpy_helper.from_array(np.array(a.floats, np.float32)))))
        new_nodes.append(node)

    for name, internal in renamed_outputs.items():
        new_nodes.append(helper.make_node("Cast", [internal], [name], name=fresh("Cast_out_" + name), to=FLOAT))
    del g.node[:]
    g.node.extend(_toposort(new_nodes, {i.name for i in g.input} | {t.name for t in g.initializer}))
    # stale float32 value_info would contradict the new types: drop it and infer again
    del g.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    return out_path


def _toposort(nodes, available: set[str]):
    available = set(available) | {""}
    pending, ordered = list(nodes), []
    while pending:
        rest = []
        for n in pending:
            if all(i in available for i in n.input):
                ordered.append(n)
                available.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise RuntimeError(f"fp16 pass left an unsortable graph near {rest[0].name!r}")
        pending = rest
    return ordered
