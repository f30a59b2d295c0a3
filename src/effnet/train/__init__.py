"""Training and fine-tuning: the paper's recipe, checkpoints that lose nothing, torchrun DDP."""

from effnet.data import DataWarning
from effnet.train.config import RunConfig
from effnet.train.finetune import finetune_model
from effnet.train.recipe import RECIPES, Recipe, get_recipe
from effnet.train.report import FinetuneReport, TrainReport
from effnet.train.trainer import TrainingDiverged, train_model

__all__ = [
    "RECIPES",
    "DataWarning",
    "FinetuneReport",
    "Recipe",
    "RunConfig",
    "TrainReport",
    "TrainingDiverged",
    "finetune_model",
    "get_recipe",
    "train_model",
]
