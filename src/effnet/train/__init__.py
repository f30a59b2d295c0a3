"""Training and fine-tuning: the paper's recipe, checkpoints that lose nothing, torchrun DDP."""

from effnet.train.recipe import RECIPES, Recipe, get_recipe
from effnet.train.trainer import TrainingDiverged, train_model

__all__ = ["RECIPES", "Recipe", "TrainingDiverged", "get_recipe", "train_model"]
