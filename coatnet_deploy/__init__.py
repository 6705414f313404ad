"""coatnet-deploy: export CoAtNet classifiers to edge runtimes and prove them against PyTorch."""

__version__ = "0.1.0"

__all__ = ["build_model", "__version__"]


def build_model(name, num_classes=None, image_size=None, weights=None, **kwargs):
    """Build a CoAtNet variant in eval mode (see ``coatnet_deploy.models.build_model``).

    Imported lazily so that ``import coatnet_deploy`` (and the device runtime) never pulls in torch.
    """
    from coatnet_deploy.models import build_model as _build

    return _build(name, num_classes=num_classes, image_size=image_size, weights=weights, **kwargs)
