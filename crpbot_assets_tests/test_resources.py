"""The resource table: CRPBOT_ENV=public binds the real public APIs with local storage and local training
(checked without reaching the internet)."""

from pathlib import Path

import pytest

from crpbot_assets.common.settings import crpbot_env
from crpbot_assets.launchers.local import LocalTrainingLauncher
from crpbot_assets.resources import RESOURCES_BY_ENV, resources_for
from crpbot_assets.sentiment.resources import MissingCredentialsError

REAL_HOSTS = {
    "coinbase": "https://api.exchange.coinbase.com",
    "fear_greed": "https://api.alternative.me",
    "reddit": "https://oauth.reddit.com",
    "google_trends": "https://trends.google.com/trends",
}


def test_public_binds_the_real_apis_local_storage_and_cpu_training(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.delenv("CRPBOT_STORAGE_URI", raising=False)
    monkeypatch.setenv("CRPBOT_REPLAY_URL", "http://127.0.0.1:1")  # must not be used
    for name in ("REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET", "REDDIT_USER_AGENT"):
        monkeypatch.delenv(name, raising=False)
    resources = resources_for("public")
    assert {name: resources[name].base_url for name in REAL_HOSTS} == REAL_HOSTS
    assert resources["reddit"].reddit_url == "https://www.reddit.com"
    assert resources["storage"].base_uri == str(Path(tmp_path) / "data")
    assert resources["io_manager"].storage.base_uri == resources["storage"].base_uri
    assert isinstance(resources["training_launcher"], LocalTrainingLauncher)
    assert set(resources) == set(resources_for("local")) == set(resources_for("prod"))
    with pytest.raises(MissingCredentialsError, match="REDDIT_CLIENT_ID"):
        resources["reddit"].client()  # Reddit needs credentials; the other three are open APIs


def test_public_is_a_valid_environment(monkeypatch):
    monkeypatch.setenv("CRPBOT_ENV", "public")
    assert crpbot_env() == "public" and "public" in RESOURCES_BY_ENV
    monkeypatch.setenv("CRPBOT_ENV", "staging")
    with pytest.raises(ValueError, match="'local', 'public', 'prod'"):
        crpbot_env()
