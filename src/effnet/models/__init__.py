"""Models: PyTorch modules made from descriptions (layers, blocks, 'same' padding, the network, the
training memory mode) and their size and cost; :mod:`effnet.factory` builds them by name and with
weights."""

from effnet.models.efficientnet import EfficientNet
from effnet.models.profile import Profile, profile

__all__ = ["EfficientNet", "Profile", "profile"]
