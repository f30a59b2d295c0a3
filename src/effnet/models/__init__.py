"""Models: PyTorch modules made from descriptions (layers, blocks, 'same' padding, the network, the
training memory mode) and their size and cost."""

from effnet.models.efficientnet import EfficientNet, create_model
from effnet.models.profile import Profile, profile

__all__ = ["EfficientNet", "Profile", "create_model", "profile"]
