"""Torch-free runtime for device apps: load a bundle, verify it, classify images.

::

    from coatnet_deploy.runtime import Classifier

    with Classifier.load("bundles/coatnet_0_rw_224-onnxruntime-fp32", threads=2) as clf:
        for p in clf.classify(["cat.jpg"], topk=5)[0]:
            print(p.label, p.index, p.prob)

Imports NumPy, Pillow and (when a bundle is loaded) the runtime the bundle names; never torch or onnx.
"""

from coatnet_deploy.runtime.classifier import Classifier, Prediction, softmax

__all__ = ["Classifier", "Prediction", "softmax"]
