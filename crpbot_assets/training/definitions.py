"""The training domain's Definitions: dataset, model and evaluation assets.

`training_launcher` (local subprocess or EC2) is bound with every other resource in crpbot_assets/resources.py.
"""

import dagster as dg

from crpbot_assets.training.assets import lstm_model, model_evaluation, training_dataset

defs = dg.Definitions(assets=[training_dataset, lstm_model, model_evaluation])
