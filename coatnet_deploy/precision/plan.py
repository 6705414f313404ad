"""The precision plan: which nodes of an FP32 ONNX graph get INT8 inputs and which stay float.

Only the inputs of Conv / MatMul / Gemm are quantized: those are the ops whose INT8 kernels pay
(TensorRT, OpenVINO and ORT fuse Q/DQ into them). Everything else stays float, and some
quantizable nodes are kept float on purpose:

- LayerNormalization, Softmax, the Erf GELU and the relative-position bias Add: quantizing their
  inputs costs many points on vision transformers (FQ-ViT: Swin-T 81.35 -> 64.38 with MinMax), and
  they are cheap next to the matmuls.
- The squeeze-excite convs and gate: they run on a 1x1 map (no speed to win) and their output
  scales every channel of the block, so their error multiplies into everything after.
- The classifier head (optional): one small Gemm whose error lands directly on the logits.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

QUANTIZABLE_OPS = ("Conv", "MatMul", "Gemm")

# reasons (stable strings: they end up in report.json)
R_QUANT = "int8 inputs (Conv/MatMul/Gemm)"
R_LAYERNORM = "layernorm: float (quantizing normalisation inputs costs accuracy)"
R_SOFTMAX = "softmax: float"
R_GELU = "gelu (Erf subgraph): float"
R_RELBIAS = "relative-position bias add: float"
R_SE = "squeeze-excite gate: float (1x1 map, scales every channel)"
R_HEAD = "classifier head: kept float"
R_USER = "excluded by user"
R_OTHER = "not a quantized op type: float"
R_ATTN = "attention MatMul (activation x activation): float for OpenVINO CPU"
R_RUNTIME = "OpenVINO ran this layer wrong in int8 (found by bisection against ONNX Runtime): float"
R_SENSITIVE = "sensitive layer: moved back to float"


@dataclass(frozen=True)
class PrecisionPlan:
    """What gets INT8 and what stays float, by ONNX node name.

    ``quantized_nodes``: Conv/MatMul/Gemm nodes whose inputs get Q/DQ.
    ``float_nodes``: every other compute node (no Q/DQ anywhere near them).
    ``excluded``: Conv/MatMul/Gemm nodes that could be quantized but stay float (SE, head, user,
    sensitivity); they are also listed in ``float_nodes``.
    ``reasons``: node name -> why it is where it is.
    ``op_types``: node name -> op type (for reports and the OpenVINO name mapping).
    """

    quantized_nodes: tuple[str, ...]
    float_nodes: tuple[str, ...]
    excluded: tuple[str, ...]
    reasons: dict[str, str] = field(default_factory=dict)
    op_types: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report's ``precision_plan`` entry."""
        return {
            "quantized_nodes": list(self.quantized_nodes),
            "float_nodes": list(self.float_nodes),
            "excluded": list(self.excluded),
            "reasons": {n: self.reasons[n] for n in (*self.quantized_nodes, *self.float_nodes) if n in self.reasons},
            "counts": {"quantized": len(self.quantized_nodes), "float": len(self.float_nodes),
                       "excluded": len(self.excluded)},
            "op_types": dict(self.op_types),
        }

    def with_excluded(self, names: Iterable[str], reason: str = R_SENSITIVE) -> "PrecisionPlan":
        """A copy with ``names`` (quantized nodes) moved to float."""
        names = [n for n in names if n in self.quantized_nodes and n not in self.excluded]
        if not names:
            return self
        moved = set(names)
        reasons = dict(self.reasons)
        reasons.update({n: reason for n in names})
        return replace(
            self,
            quantized_nodes=tuple(n for n in self.quantized_nodes if n not in moved),
            float_nodes=tuple(self.float_nodes) + tuple(names),
            excluded=tuple(self.excluded) + tuple(names),
            reasons=reasons,
        )


def name_nodes(model) -> None:
    """Give every unnamed node a deterministic unique name (in place): plans refer to names."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def load_named(path_or_model):
    """An onnx.ModelProto with every node named (loads a path; copies a model)."""
    import onnx

    if isinstance(path_or_model, (str, Path)):
        model = onnx.load(str(path_or_model))
    else:
        model = onnx.ModelProto()
        model.CopyFrom(path_or_model)
    name_nodes(model)
    return model


class _Graph:
    def __init__(self, model):
        self.nodes = list(model.graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list] = defaultdict(list)
        for n in self.nodes:
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        self.initializers = {t.name for t in model.graph.initializer}
        self.constants = self.initializers | {o for n in self.nodes if n.op_type == "Constant" for o in n.output}
        self.outputs = {o.name for o in model.graph.output}

    def users(self, node):
        return [c for o in node.output for c in self.consumers.get(o, [])]

    def parent(self, node, idx=0):
        return self.producer.get(node.input[idx]) if len(node.input) > idx else None


def _gelu_nodes(g: _Graph) -> set[str]:
    # x * 0.5 * (1 + erf(x / sqrt 2)): Div|Mul -> Erf -> Add -> Mul -> Mul around each Erf
    found: set[str] = set()
    for erf in (n for n in g.nodes if n.op_type == "Erf"):
        found.add(erf.name)
        pre = g.parent(erf)
        if pre is not None and pre.op_type in ("Div", "Mul"):
            found.add(pre.name)
        frontier = [erf]
        for _ in range(3):
            nxt = [u for n in frontier for u in g.users(n) if u.op_type in ("Add", "Mul")]
            found.update(u.name for u in nxt)
            frontier = nxt
    return found


_ACTS = {"Relu", "Sigmoid", "Mul", "HardSigmoid", "HardSwish", "Clip", "LeakyRelu", "Gelu", "Tanh"}


def _se_nodes(g: _Graph) -> set[str]:
    # A gating Sigmoid multiplies ANOTHER tensor (SiLU multiplies its own input, so plain
    # Conv+SiLU is not matched). From it: expand conv <- activation <- reduce conv <- global pool.
    found: set[str] = set()
    for sig in (n for n in g.nodes if n.op_type in ("Sigmoid", "HardSigmoid")):
        gates = [u for u in g.users(sig) if u.op_type == "Mul" and sig.input[0] not in u.input]
        expand = g.parent(sig)
        if not gates or expand is None or expand.op_type != "Conv":
            continue
        found.update([sig.name, expand.name, *(u.name for u in gates)])
        acts, cur = [], g.parent(expand)
        for _ in range(4):
            if cur is None or cur.op_type == "Conv" or cur.op_type not in _ACTS:
                break
            acts.append(cur)
            cur = g.parent(cur)
        if cur is None or cur.op_type != "Conv":
            continue
        pool = g.parent(cur)
        if pool is not None and pool.op_type in ("GlobalAveragePool", "ReduceMean"):
            found.update([cur.name, pool.name, *(a.name for a in acts)])
            # SiLU as Sigmoid + Mul: the Sigmoid hangs off the reduce conv, not the chain
            found.update(u.name for u in g.users(cur) if u.op_type in _ACTS)
    return found


def _relbias_adds(g: _Graph) -> set[str]:
    # an Add right before Softmax with a constant (or constant-derived) operand
    found = set()
    for sm in (n for n in g.nodes if n.op_type == "Softmax"):
        p = g.parent(sm)
        if p is not None and p.op_type == "Add":
            found.add(p.name)
    return found


def _head_nodes(g: _Graph) -> set[str]:
    # the last Conv/MatMul/Gemm on the way back from each graph output
    found = set()
    for out in g.outputs:
        frontier, hops = [g.producer.get(out)], 0
        while frontier and hops < 8:
            hops += 1
            nxt = []
            for n in frontier:
                if n is None:
                    continue
                if n.op_type in QUANTIZABLE_OPS:
                    found.add(n.name)
                    continue
                nxt += [g.producer[i] for i in n.input if i in g.producer]
            frontier = nxt
    return found


def _activation_matmuls(g: _Graph) -> set[str]:
    """MatMuls whose both inputs are activations (attention's Q.K^T and attn.V), not weights.

    OpenVINO's CPU plugin lost most of the signal on these with per-tensor int8 on both sides
    (seen on coatnet_tiny: cosine 0.80 where ONNX Runtime ran the same Q/DQ file at 0.9999).
    """
    return {n.name for n in g.nodes if n.op_type == "MatMul" and not any(i in g.constants for i in n.input)}


def plan_from_onnx(
    onnx_model,
    exclude: Iterable[str] = (),
    *,
    keep_head_float: bool = False,
    keep_se_float: bool = True,
    keep_attention_matmuls_float: bool = False,
) -> PrecisionPlan:
    """Classify every node of an FP32 ONNX graph (path or ModelProto) -> PrecisionPlan.

    ``exclude``: node names (exact) or op types to keep float on top of the rules. Unknown names
    raise UserError, so a typo cannot silently quantize a layer the user meant to protect.
    """
    from coatnet_deploy.errors import UserError

    model = load_named(onnx_model)
    g = _Graph(model)
    names = {n.name for n in g.nodes}
    types = {n.op_type for n in g.nodes}
    exclude = list(exclude)
    unknown = [e for e in exclude if e not in names and e not in types]
    if unknown:
        raise UserError(
            f"precision exclude {unknown[:3]} matches no node",
            "excludes are ONNX node names or op types of the exported graph",
            "list the node names with `coatnet-deploy inspect` or use an op type such as Gemm",
        )
    gelu, se, relbias = _gelu_nodes(g), _se_nodes(g) if keep_se_float else set(), _relbias_adds(g)
    head = _head_nodes(g) if keep_head_float else set()
    attn = _activation_matmuls(g) if keep_attention_matmuls_float else set()

    quantized, floats, excluded, reasons = [], [], [], {}
    for n in g.nodes:
        if n.op_type == "Constant":
            continue
        if n.name in exclude or n.op_type in exclude:
            why = R_USER
        elif n.name in se:
            why = R_SE
        elif n.name in head:
            why = R_HEAD
        elif n.name in attn:
            why = R_ATTN
        elif n.op_type in QUANTIZABLE_OPS:
            why = R_QUANT
        elif n.op_type == "LayerNormalization":
            why = R_LAYERNORM
        elif n.op_type == "Softmax":
            why = R_SOFTMAX
        elif n.name in gelu:
            why = R_GELU
        elif n.name in relbias:
            why = R_RELBIAS
        else:
            why = R_OTHER
        reasons[n.name] = why
        if why == R_QUANT:
            quantized.append(n.name)
        else:
            floats.append(n.name)
            if n.op_type in QUANTIZABLE_OPS:
                excluded.append(n.name)
    return PrecisionPlan(
        quantized_nodes=tuple(quantized), float_nodes=tuple(floats), excluded=tuple(excluded),
        reasons=reasons, op_types={n.name: n.op_type for n in g.nodes},
    )
