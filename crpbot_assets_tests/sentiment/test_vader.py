"""VADER works offline from the packaged lexicon, reproduces nltk's documented scores, fails clearly without it."""

import subprocess
import sys

import pytest

from crpbot_assets.common.settings import REPO_ROOT
from crpbot_assets.sentiment.vader import compound_scores

# The compound scores published with VADER (vaderSentiment README / nltk's sentiment howto).
DOCUMENTED = {
    "VADER is smart, handsome, and funny.": 0.8316,
    "VADER is smart, handsome, and funny!": 0.8439,
    "VADER is very smart, handsome, and funny.": 0.8545,
    "VADER is VERY SMART, handsome, and FUNNY.": 0.9227,
    "VADER is not smart, handsome, nor funny.": -0.7424,
    "The book was good.": 0.4404,
    "Today SUX!": -0.5461,
}


def test_documented_scores():
    assert compound_scores(list(DOCUMENTED)) == pytest.approx(list(DOCUMENTED.values()), abs=5e-5)


def _run(code: str, tmp_path) -> subprocess.CompletedProcess:
    # An empty NLTK_DATA and no network: only the packaged lexicon can make this work.
    env = {
        "NLTK_DATA": str(tmp_path),
        "PATH": "",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO_ROOT),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )


@pytest.mark.slow
def test_scores_without_nltk_data_or_network(tmp_path):
    result = _run(
        "from crpbot_assets.sentiment.vader import compound_scores;"
        "print(compound_scores(['The book was good.'])[0])",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.4404"


@pytest.mark.slow
def test_missing_lexicon_is_a_clear_error(tmp_path):
    # sys.modules[name] = None is how Python marks a package as not importable.
    result = _run(
        "import sys; sys.modules['vaderSentiment'] = None\n"
        "from crpbot_assets.sentiment.vader import analyzer; analyzer()",
        tmp_path,
    )
    assert result.returncode != 0
    assert "VaderLexiconMissing" in result.stderr and "install the `vaderSentiment` package" in result.stderr
