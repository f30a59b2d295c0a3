"""Build: PyTorch modules made from descriptions."""

from effnet.build.model import EfficientNet, create_model, resolve_description
from effnet.build.profile import Profile, profile

__all__ = ["EfficientNet", "Profile", "create_model", "profile", "resolve_description"]
