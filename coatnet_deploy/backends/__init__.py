"""Backends split by role: building an artifact (loaders/builders) and running it (runners).

Every runner implements ``coatnet_deploy.backends.base.Runner``; parity and the benchmark are
written once against that interface. Nothing here imports torch, onnx or a runtime at import time.
"""
