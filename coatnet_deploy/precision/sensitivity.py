"""Which quantized layers hurt, and moving them back to float until the accuracy gate holds.

``sensitivity`` measures each quantized node on its own: the node is run on the FP32 model's own
activations, once plainly and once through its Q/DQ pairs (the scales of the Q/DQ graph), and the
signal-to-quantization-noise ratio of its output is recorded. Measured this way a layer is not
blamed for the error of the layers before it (that accumulated figure is reported as well,
``output_sqnr_db``). ``accuracy_budget`` then works like nncf.quantize_with_accuracy_control, for
any INT8 path: requantize with the worst layers in float, a few at a time, until the gate holds.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np

from coatnet_deploy.precision.plan import QUANTIZABLE_OPS, PrecisionPlan


def _sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    noise = float(np.sum((ref - test.astype(np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(max(signal, 1e-30) / noise)


def _session_with_outputs(model, names: Sequence[str]):
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
            have.add(n)
    so = ort.SessionOptions()
    # graph optimizations would fold the Q/DQ pairs into other kernels and rename tensors
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def sensitivity(fp32_onnx, qdq_onnx, calibration_arrays: Iterable[np.ndarray]) -> list[dict[str, Any]]:
    """FP32 ONNX + its Q/DQ ONNX + a few input arrays -> one entry per quantized node, worst first.

    Each entry: ``{"node", "op_type", "sqnr_db", "output_sqnr_db"}``; ``sqnr_db`` is the node's own
    quantization noise on FP32 inputs (ranked on), ``output_sqnr_db`` the accumulated noise at its
    output in the full Q/DQ graph. Higher is better; ~20 dB and below is usually worth a look.
    """
    import onnx

    from coatnet_deploy.precision.plan import load_named
    from coatnet_deploy.precision.qdq import _as_batches

    fp32 = load_named(fp32_onnx)
    qdq = onnx.load(str(qdq_onnx))
    input_name = fp32.graph.input[0].name
    batches = _as_batches(calibration_arrays)
    producer = {o: n for n in qdq.graph.node for o in n.output}
    inits = {t.name: t for t in qdq.graph.initializer}

    probes = []  # (node, float input names, mini model)
    for node in qdq.graph.node:
        if node.op_type not in QUANTIZABLE_OPS:
            continue
        if not any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in node.input):
            continue
        sub_nodes, float_inputs, sub_inits = [], [], set()
        for i in node.input:
            if not i:
                continue
            dq = producer.get(i)
            if dq is not None and dq.op_type == "DequantizeLinear":
                q = producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    sub_nodes.append(q)
                    float_inputs.append(q.input[0])
                    sub_inits.update(q.input[1:])
                else:
                    sub_inits.add(dq.input[0])
                sub_nodes.append(dq)
                sub_inits.update(dq.input[1:])
            elif i in inits:
                sub_inits.add(i)
            else:
                float_inputs.append(i)
        sub_nodes.append(node)
        graph = onnx.helper.make_graph(
            sub_nodes, "probe",
            [onnx.helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None) for x in float_inputs],
            [onnx.helper.make_empty_tensor_value_info(node.output[0])],
            [inits[x] for x in sorted(sub_inits) if x in inits],
        )
        mini = onnx.helper.make_model(graph, opset_imports=list(qdq.opset_import))
        mini.ir_version = qdq.ir_version
        probes.append((node, float_inputs, mini))

    wanted = sorted({x for _, ins, _ in probes for x in ins} | {n.output[0] for n, _, _ in probes})
    ref_sess = _session_with_outputs(fp32, wanted)
    q_sess = _session_with_outputs(qdq, [n.output[0] for n, _, _ in probes])
    ref_acts = [dict(zip([o.name for o in ref_sess.get_outputs()], ref_sess.run(None, {input_name: b})))
                for b in batches]
    q_acts = [dict(zip([o.name for o in q_sess.get_outputs()], q_sess.run(None, {input_name: b})))
              for b in batches]

    ranking = []
    for node, ins, mini in probes:
        # unoptimized: plain fake-quant arithmetic, not this CPU's INT8 kernels (AVX2 without VNNI
        # saturates full-range int8 weights, which is not the layer's fault)
        sess = _session_with_outputs(mini, [])
        ref = np.concatenate([a[node.output[0]].ravel() for a in ref_acts])
        local = np.concatenate([sess.run(None, {x: a[x] for x in ins})[0].ravel() for a in ref_acts])
        accumulated = np.concatenate([a[node.output[0]].ravel() for a in q_acts])
        ranking.append({"node": node.name, "op_type": node.op_type,
                        "sqnr_db": round(float(_sqnr_db(ref, local)), 3),
                        "output_sqnr_db": round(float(_sqnr_db(ref, accumulated)), 3)})
    ranking.sort(key=lambda r: (r["sqnr_db"], r["node"]))
    return ranking


def suggest_exclusions(ranking: Sequence[dict], threshold_db: float = 20.0) -> list[str]:
    """Ranked entries -> names of the nodes whose own SQNR is below ``threshold_db`` (worst first)."""
    return [r["node"] for r in ranking if r["sqnr_db"] < threshold_db]


def accuracy_budget(
    quantize_fn: Callable[[PrecisionPlan], Any],
    evaluate_fn: Callable[[Any], float],
    ranking: Sequence[dict],
    gate: float | Callable[[float], bool],
    *,
    plan: PrecisionPlan,
    step: int = 1,
    max_steps: int | None = None,
) -> tuple[PrecisionPlan, list[dict[str, Any]]]:
    """Move the worst-ranked layers back to float, ``step`` at a time, until the gate holds.

    ``quantize_fn(plan) -> artifact`` builds an INT8 model (ORT Q/DQ, OpenVINO QDQ or NNCF: any
    path); ``evaluate_fn(artifact) -> metric`` scores it, higher is better (e.g. min cosine against
    the reference, or top-1). ``gate`` is the minimum metric, or a predicate on it. Returns the
    first plan that passes, or, if the ranking runs out first, the best plan seen; and the history
    ``[{step, moved_to_float, excluded_total, metric, passed}]``.
    """
    passes = gate if callable(gate) else (lambda m: m >= gate)
    order = [r["node"] for r in ranking if r["node"] in plan.quantized_nodes]
    history: list[dict[str, Any]] = []
    current, best = plan, None
    moved: list[str] = []
    i = 0
    while True:
        metric = float(evaluate_fn(quantize_fn(current)))
        ok = bool(passes(metric))
        history.append({"step": len(history), "moved_to_float": list(moved),
                        "excluded_total": len(current.excluded), "metric": metric, "passed": ok})
        if best is None or metric > best[1]:
            best = (current, metric)
        if ok:
            return current, history
        if i >= len(order) or (max_steps is not None and len(history) > max_steps):
            return best[0], history
        moved = order[i:i + step]
        i += step
        current = current.with_excluded(moved)
