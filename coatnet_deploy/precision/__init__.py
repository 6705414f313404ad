"""Precision: what stays float (plan), INT8 Q/DQ ONNX, FP16 ONNX, OpenVINO INT8 via NNCF, sensitivity.

Submodules import their heavy libraries (onnx, onnxruntime, openvino, nncf) inside functions.
"""

from coatnet_deploy.precision.plan import PrecisionPlan, plan_from_onnx

__all__ = ["PrecisionPlan", "plan_from_onnx"]
