"""effnet: EfficientNet and compound model scaling as data, modules and tools."""

from effnet.deploy.optimize import optimize
from effnet.describe import BlockSpec, NetworkSpec, parse_blocks
from effnet.errors import UserError
from effnet.factory import create_model, load_model, load_weights
from effnet.models import EfficientNet, Profile, profile
from effnet.scale import compound_coefficients, scale_compound, scale_network
from effnet.weights import save_weights
from effnet.zoo import get_description, model_names

__version__ = "0.1.0"

__all__ = [
    "BlockSpec",
    "EfficientNet",
    "NetworkSpec",
    "Profile",
    "UserError",
    "compound_coefficients",
    "create_model",
    "get_description",
    "load_model",
    "load_weights",
    "model_names",
    "optimize",
    "parse_blocks",
    "profile",
    "scale_compound",
    "scale_network",
    "save_weights",
]
