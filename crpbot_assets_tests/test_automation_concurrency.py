"""Concurrent runs in separate processes share each API's limit and serialize writers of one partition."""

import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from crpbot_assets.common.io_manager import partition_path
from crpbot_assets.common.settings import REPO_ROOT
from crpbot_assets.common.storage import Storage
from crpbot_assets.replay import synthetic

pytestmark = pytest.mark.slow

CANDLES_RUN = """
import sys, dagster as dg
from crpbot_assets.candles.assets import candles
from crpbot_assets.candles.resources import CoinbaseResource
from crpbot_assets.resources import file_resources
url, data, key = sys.argv[1:4]
result = dg.materialize(
    [candles], partition_key=key, raise_on_error=False,
    resources={**file_resources(data), "coinbase": CoinbaseResource(base_url=url)},  # production pacing
)
meta = result.get_asset_materialization_events()[0].materialization.metadata if result.success else {}
print("RESULT", result.success, meta.get("retries").value if meta else None)
"""

REDDIT_RUN = """
import sys, time
from pathlib import Path
import dagster as dg
from crpbot_assets.common.resources import StorageResource
from crpbot_assets.common.storage import Storage
from crpbot_assets.resources import REPLAY_REDDIT_CREDENTIALS, file_resources
from crpbot_assets.sentiment.assets import reddit_posts
from crpbot_assets.sentiment.resources import RedditResource
url, data, month, subreddit, marker, gate = sys.argv[1:7]

class SlowStorage(Storage):
    # a store whose post writes announce themselves and take until `gate` exists (a slow disk or S3 upload)
    def write_bytes(self, relative, payload):
        if relative.startswith("reddit_posts/"):
            Path(marker).write_text("writing")
            deadline = time.monotonic() + 120
            while not Path(gate).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return super().write_bytes(relative, payload)

class SlowStorageResource(StorageResource):
    @property
    def storage(self):
        return SlowStorage(self.base_uri)

reddit = RedditResource(
    base_url=url, reddit_url=url, subreddits={"BTC-USD": [subreddit]}, max_posts=200, **REPLAY_REDDIT_CREDENTIALS
)
resources = {**file_resources(data), "storage": SlowStorageResource(base_uri=data), "reddit": reddit}
result = dg.materialize([reddit_posts], partition_key=month, resources=resources, raise_on_error=False)
meta = result.get_asset_materialization_events()[0].materialization.metadata if result.success else {}
print("RESULT", result.success, meta.get("posts").value if meta else None, meta.get("lock_wait_s").value if meta else None)
"""


def spawn(code: str, home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-W", "ignore", "-c", textwrap.dedent(code), *args],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def result_line(process: subprocess.Popen, timeout: float) -> list[str]:
    out, _ = process.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("RESULT")]
    assert process.returncode == 0 and lines, out[-3000:]
    return lines[-1].split()[1:]


def test_two_concurrent_candle_runs_share_the_limit_without_429(replay_server, tmp_path):
    """Each run alone paces itself to Coinbase's 10 requests/s; together they share one bucket (the
    instance's file limiter), so the replay server never answers 429 and both months are exact."""
    home = tmp_path / "home"
    home.mkdir()
    data = str(tmp_path / "data")
    keys = ["2019-02-01|BTC-USD", "2019-02-01|ETH-USD"]
    runs = [spawn(CANDLES_RUN, home, replay_server.url, data, key) for key in keys]
    outcomes = [result_line(run, timeout=240) for run in runs]
    assert outcomes == [["True", "0"], ["True", "0"]]
    stats = replay_server.stats["coinbase"]
    assert stats["requests"] == 2 * 135 and stats.get("rate_limited", 0) == 0
    start, end = datetime(2019, 2, 1, tzinfo=UTC), datetime(2019, 3, 1, tzinfo=UTC)
    for key in keys:
        stored = Storage(data).read_parquet(partition_path(dg.AssetKey("candles"), key) + ".parquet")
        assert stored.equals(synthetic.candles(key.split("|")[1], start, end))


@pytest.mark.parametrize("instances", ["one instance", "two instances sharing the data folder"])
def test_two_concurrent_reddit_runs_of_one_month_lose_no_post(replay_server, tmp_path, instances):
    """Run A lists r/bitcoin and is slow to write; run B lists r/ethereum and starts while A writes. B waits
    for the partition lock, reads A's posts and appends its own: the month ends with both. The lock lives with
    the stored files, so it holds as well when A and B belong to two Dagster instances (DAGSTER_HOMEs)."""
    home = tmp_path / "home"
    home.mkdir()
    home_b = home if instances == "one instance" else tmp_path / "home_b"
    home_b.mkdir(exist_ok=True)
    data = str(tmp_path / "data")
    month = datetime.now(UTC).strftime("%Y-%m-01")
    marker = tmp_path / "a_is_writing"
    gate = tmp_path / "a_may_finish"
    open_gate = tmp_path / "always_open"
    open_gate.touch()
    slow = spawn(REDDIT_RUN, home, replay_server.url, data, month, "bitcoin", str(marker), str(gate))
    deadline = time.monotonic() + 120
    while not marker.exists():  # bounded poll: A holds the lock and is inside its slow write
        assert slow.poll() is None and time.monotonic() < deadline, "run A never reached its write"
        time.sleep(0.1)
    fast = spawn(
        REDDIT_RUN, home_b, replay_server.url, data, month, "ethereum", str(tmp_path / "b"), str(open_gate)
    )
    seen = []
    for line in fast.stdout:  # B's own log: it has listed its posts and now waits for A's lock
        seen.append(line)
        if "waiting for lock" in line:
            break
    assert any("waiting for lock" in line for line in seen), "".join(seen)[-3000:]
    gate.touch()  # A's write completes only now, while B is queued behind it
    _, a_posts, a_wait = result_line(slow, timeout=180)
    _, b_posts, b_wait = result_line(fast, timeout=180)
    stored = Storage(data).read_parquet(partition_path(dg.AssetKey("reddit_posts"), month) + ".parquet")
    by_sub = stored.group_by("subreddit").len()
    counts = dict(zip(by_sub["subreddit"], by_sub["len"]))
    assert set(counts) == {"bitcoin", "ethereum"}  # nothing B stored was overwritten, and A's posts stayed
    assert stored["id"].n_unique() == stored.height == int(b_posts)  # B's metadata counts what is stored
    assert int(a_posts) == counts["bitcoin"] and float(a_wait) == 0.0 and float(b_wait) > 0.0
    assert stored.equals(stored.sort("created_utc", "id"))
