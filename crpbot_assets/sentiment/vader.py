"""VADER compound scores from nltk, offline: the lexicon comes from the vaderSentiment wheel, never a download.

nltk 3.10 loads lexicons only through `nltk.data.path` (absolute paths are refused as unsafe), so the
vaderSentiment package folder is added to that path and `vader_lexicon.txt` is loaded from it. nltk is imported
on first use: importing it pulls in scipy.stats (~0.5 s), which every process loading the definitions would pay.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nltk.sentiment.vader import SentimentIntensityAnalyzer

LEXICON = "vader_lexicon.txt"


class VaderLexiconMissing(RuntimeError):
    """The VADER lexicon is not installed (the vaderSentiment package ships it)."""


def lexicon_dir() -> Path:
    """Folder of the vaderSentiment package holding `vader_lexicon.txt`."""
    spec = importlib.util.find_spec("vaderSentiment")
    folder = Path(spec.origin).parent if spec and spec.origin else None
    if folder is None or not (folder / LEXICON).is_file():
        raise VaderLexiconMissing(
            f"VADER lexicon {LEXICON} not found (looked in {folder or 'no vaderSentiment package'}); "
            "install the `vaderSentiment` package, which ships it — crpbot never downloads nltk data at run time"
        )
    return folder


@lru_cache(maxsize=1)
def analyzer() -> SentimentIntensityAnalyzer:
    """nltk's SentimentIntensityAnalyzer on the packaged lexicon."""
    import nltk.data
    from nltk.sentiment.vader import SentimentIntensityAnalyzer

    folder = str(lexicon_dir())
    if folder not in nltk.data.path:
        nltk.data.path.insert(0, folder)
    return SentimentIntensityAnalyzer(lexicon_file=LEXICON)


def compound_scores(texts: list[str]) -> list[float]:
    """VADER compound score (-1..+1) of each text."""
    sia = analyzer()
    return [sia.polarity_scores(text)["compound"] for text in texts]
