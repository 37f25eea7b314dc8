"""The training domain's Definitions: dataset, model and evaluation assets.

`training_launcher` (local subprocess or EC2) is bound with every other resource in crpbot_assets/resources.py.
"""

import dagster as dg

from crpbot_assets.training.assets import lstm_model, model_evaluation, training_dataset
from crpbot_assets.training.walk_forward_assets import build_walk_forward_assets

# The walk-forward's trailing window (months) and retraining frequency ("monthly" or "quarterly") live here:
# they decide which upstream months each test month depends on.
WALK_FORWARD = {"window_months": 12, "retrain": "monthly"}

defs = dg.Definitions(
    assets=[training_dataset, lstm_model, model_evaluation, *build_walk_forward_assets(**WALK_FORWARD)]
)
