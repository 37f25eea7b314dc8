"""The training domain's Definitions: dataset, model and evaluation assets, and the local training launcher.

Only the local launcher is bound here; the prod binding (`EC2TrainingLauncher` under `training_launcher`)
is the lead's to wire in crpbot_assets/definitions.py.
"""

import dagster as dg

from crpbot_assets.common.settings import crpbot_env
from crpbot_assets.launchers.local import LocalTrainingLauncher
from crpbot_assets.training.assets import lstm_model, model_evaluation, training_dataset


def training_resources(env: str) -> dict:
    return {"training_launcher": LocalTrainingLauncher()} if env == "local" else {}


defs = dg.Definitions(
    assets=[training_dataset, lstm_model, model_evaluation], resources=training_resources(crpbot_env())
)
