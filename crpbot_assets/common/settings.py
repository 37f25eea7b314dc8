"""Environment selection: CRPBOT_ENV=local (embedded defaults, replay server), public (real public APIs, local
storage and training) or prod (real services, S3, EC2)."""

from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENTS = ("local", "public", "prod")
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REPLAY_URL = "http://127.0.0.1:8765"


def crpbot_env() -> str:
    """The active environment; anything but ENVIRONMENTS is a configuration error."""
    value = os.environ.get("CRPBOT_ENV", "local")
    if value not in ENVIRONMENTS:
        raise ValueError(f"CRPBOT_ENV={value!r} is not one of {ENVIRONMENTS}")
    return value


def replay_url() -> str:
    """Base URL of the local replay server that stands in for every external API."""
    return os.environ.get("CRPBOT_REPLAY_URL", DEFAULT_REPLAY_URL).rstrip("/")


def local_storage_uri() -> str:
    """Where the embedded defaults keep asset files: $DAGSTER_HOME/data, else dagster_home/data in the repo."""
    home = os.environ.get("DAGSTER_HOME") or str(REPO_ROOT / "dagster_home")
    return os.environ.get("CRPBOT_STORAGE_URI", str(Path(home) / "data"))


DEFAULT_RETRAIN_CRON = "0 3 * * 1"  # Mondays 03:00 UTC


def retrain_cron() -> str:
    """When training_dataset -> lstm_model -> model_evaluation retrain (cron, UTC): CRPBOT_RETRAIN_CRON."""
    return os.environ.get("CRPBOT_RETRAIN_CRON", DEFAULT_RETRAIN_CRON)


def interval_setting(name: str, default: int) -> int:
    """A polling interval in seconds from environment variable `name` (tests shorten them); positive."""
    value = os.environ.get(name)
    if value is None:
        return default
    if not value.isdigit() or int(value) <= 0:
        raise ValueError(f"{name}={value!r} must be a positive number of seconds")
    return int(value)
