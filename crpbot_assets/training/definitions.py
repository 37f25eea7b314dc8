"""The training domain's Definitions: dataset, model and evaluation assets, and the local training launcher.

Only the local launcher is bound here; the prod binding (`EC2TrainingLauncher` under `training_launcher`)
is the lead's to wire in crpbot_assets/definitions.py.
"""

import dagster as dg

from crpbot_assets.common.settings import crpbot_env
from crpbot_assets.launchers.local import LocalTrainingLauncher
from crpbot_assets.training.assets import lstm_model, model_evaluation, training_dataset
from crpbot_assets.training.walk_forward_assets import build_walk_forward_assets


def training_resources(env: str) -> dict:
    return {"training_launcher": LocalTrainingLauncher()} if env == "local" else {}


# The walk-forward's trailing window (months) and retraining frequency ("monthly" or "quarterly") live here:
# they decide which upstream months each test month depends on.
WALK_FORWARD = {"window_months": 12, "retrain": "monthly"}

defs = dg.Definitions(
    assets=[training_dataset, lstm_model, model_evaluation, *build_walk_forward_assets(**WALK_FORWARD)],
    resources=training_resources(crpbot_env()),
)
