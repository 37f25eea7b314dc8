"""The verdict in words and its table: each claim flips when the number beside it crosses its boundary."""

import copy
from datetime import UTC, datetime

import pytest

from crpbot_assets.training import verdict as vd
from crpbot_assets.training import verdict_words as vw
from crpbot_assets.training.report_page import text
from crpbot_assets_tests.training.test_walk_forward import _predictions


def _model(net: float, turnover: float = 3.0, break_even: float = -5.0) -> dict:
    return {
        "net_return": net,
        "summed_net_ci": [net - 0.02, net + 0.02],
        "turnover_per_day": turnover,
        "max_drawdown": min(net, 0.0) - 0.01,
        "break_even_fee_bps": break_even if turnover else float("nan"),
        "sharpe_daily_ann": -1.5,
    }


BASE = {
    "metric": "bacc",
    "n_months": 2,
    "lstm_seeds": 1,
    "fee_bps": 60.0,
    "mean": {
        "bacc/lstm": {"mean": 0.341, "ci": [0.33, 0.35]},
        "bacc/logit": {"mean": 0.348, "ci": [0.34, 0.36]},
        "bacc/majority": {"mean": 1 / 3, "ci": [1 / 3, 1 / 3]},
    },
    "best_baseline": "logit",
    "lstm_minus_best": {"mean": -0.007, "ci": [-0.019, 0.008]},
    "ablation": {"bacc": {"mean": -0.002, "ci": [-0.01, 0.006], "seeds": 1, "months_won": 1}},
    "ic": {"ic/lstm": 0.0123, "ic/logit": -0.004},
    "trading": {
        "models": {
            "lstm": _model(-0.12),
            "logit": _model(-0.05, break_even=20.0),
            "buy_and_hold": _model(-0.031, turnover=0.02, break_even=-900.0),
        },
        "best_trading_baseline": "buy_and_hold",
        "lstm_minus_best_net": {"mean": -0.089, "ci": [-0.2, 0.03]},
    },
}


def _with(**changes) -> dict:
    """BASE with `changes` applied at dotted paths (`trading.models.lstm.net_return=0.1`)."""
    report = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = report
        for p in parents:
            node = node[p]
        node[last] = value
    return report


def test_the_verdict_reads_like_the_issue_asks():
    assert vw.verdict(BASE) == (
        "After costs the LSTM does not beat the best baseline, buy and hold: net return -12.0 % against -3.1 % "
        "(difference of summed daily net returns -8.9 points, 95 % interval -20.0 to +3.0, spans zero; 2 test "
        "months, 1 training seed: the intervals ignore training noise). After a 60 bps fee and the half-spread "
        "every strategy loses (best: buy and hold -3.1 %); the LSTM's break-even fee is -5.0 bps (it loses before "
        "any fee). Balanced accuracy: LSTM 34.1 %, 0.7 points below logistic regression (95 % interval -1.9 to "
        "+0.8, spans zero). Sentiment: no measurable effect (-0.2 points balanced accuracy with minus without the "
        "sentiment inputs, 95 % interval -1.0 to +0.6, spans zero)."
    )


@pytest.mark.parametrize(
    ("ci", "mean", "says"),
    [
        ([0.001, 0.05], 0.02, "the LSTM beats the best baseline"),
        ([-0.001, 0.05], 0.02, "the LSTM does not beat the best baseline"),
        ([-0.05, -0.001], -0.02, "the LSTM does worse than the best baseline"),
    ],
)
def test_beats_or_not_follows_the_interval_of_the_excess(ci, mean, says):
    sentence = vw.money(_with(trading__lstm_minus_best_net={"mean": mean, "ci": ci}))
    assert says in sentence
    assert ("excludes zero" in sentence) == (ci[0] > 0 or ci[1] < 0)
    assert f"{mean * 100:+.1f} points" in sentence and "net return -12.0 % against -3.1 %" in sentence


def test_scope_names_months_and_seeds_and_one_seed_ignores_training_noise():
    assert "2 test months, 1 training seed: the intervals ignore training noise" in vw.money(BASE)
    three = vw.money(_with(lstm_seeds=3, n_months=1))
    assert "1 test month, 3 training seeds)" in three and "noise" not in three
    flat = _with()
    flat["trading"]["models"]["lstm"]["turnover_per_day"] = 0.0
    assert "the LSTM (its rule never traded) does not beat" in vw.money(flat)


def test_loses_or_earns_after_fees_follows_each_net_return():
    assert "every strategy loses" in vw.fees(BASE)
    models = BASE["trading"]["models"]
    earning = {m: {**r, "net_return": 0.01} for m, r in models.items()}
    assert "every strategy earns (best: LSTM +1.0 %)" in vw.fees(_with(trading__models=earning))
    mixed = {**models, "buy_and_hold": {**models["buy_and_hold"], "net_return": 0.031}}
    assert "buy and hold earns, LSTM and logistic regression lose" in vw.fees(_with(trading__models=mixed))
    flat = {**models, "logit": _model(0.0, turnover=0.0)}
    sentence = vw.fees(_with(trading__models=flat))
    assert "every strategy that traded loses (best: buy and hold -3.1 %)" in sentence
    assert "; logistic regression never traded (its decision rule stayed flat)" in sentence
    alone = {**flat, "lstm": _model(0.0, turnover=0.0)}
    sentence = vw.fees(_with(trading__models=alone))
    assert "only buy and hold traded: it loses (buy and hold -3.1 %)" in sentence
    assert "LSTM and logistic regression never traded (their decision rules stayed flat)." in sentence
    assert "After a 25 bps fee" in vw.fees(_with(fee_bps=25.0))
    positive = {**models, "lstm": _model(-0.12, break_even=12.0)}
    sentence = vw.fees(_with(trading__models=positive))
    assert "break-even fee is 12.0 bps." in sentence and "before any fee" not in sentence


def test_classification_above_or_below_the_best_baseline():
    assert "0.7 points below logistic regression" in vw.classification(BASE)
    better = vw.classification(_with(lstm_minus_best={"mean": 0.012, "ci": [0.002, 0.02]}))
    assert "1.2 points above logistic regression" in better and "excludes zero" in better
    assert vw.classification(_with(metric="acc", mean={"acc/lstm": {"mean": 0.5}})).startswith(
        "Accuracy: LSTM 50.0 %"
    )


@pytest.mark.parametrize(
    ("ci", "seeds", "says", "noise"),
    [
        ([-0.01, 0.006], 1, "Sentiment: no measurable effect", False),
        ([0.002, 0.03], 1, "Sentiment: helps", True),
        ([0.002, 0.03], 3, "Sentiment: helps", False),
        ([-0.03, -0.002], 5, "Sentiment: hurts", False),
    ],
)
def test_sentiment_helps_hurts_or_has_no_measurable_effect(ci, seeds, says, noise):
    mean = sum(ci) / 2
    sentence = vw.sentiment(_with(ablation={"bacc": {"mean": mean, "ci": ci, "seeds": seeds}}))
    assert sentence.startswith(says) and f"{mean * 100:+.1f} points balanced accuracy" in sentence
    assert ("with 1 training seed this may be training noise" in sentence) is noise
    assert "not measured" in vw.sentiment({k: v for k, v in BASE.items() if k != "ablation"})


def test_one_table_models_as_rows_units_in_headers_percentages():
    table = vw.table(BASE)
    assert table.headers[:2] == ("model", "net return (%)") and "break-even fee (bps)" in table.headers
    assert [row[0] for row in table.rows] == ["LSTM", "logistic regression", "buy and hold", "majority class"]
    lstm = dict(zip(table.headers, table.rows[0]))
    assert lstm["net return (%)"] == "-12.0" and lstm["summed net, 95 % interval (%)"] == "-14.0 to -10.0"
    assert lstm["max drawdown (%)"] == "-13.0" and lstm["IC"] == "+0.012" and lstm["bacc (%)"] == "34.1"
    majority = dict(zip(table.headers, table.rows[-1]))
    assert majority["net return (%)"] == "-" and majority["bacc (%)"] == "33.3"
    assert "Sharpe: annualised from daily returns" in table.legend and "\n" not in table.legend
    lines = text(table).splitlines()
    assert all(len(line) <= len(lines[0]) for line in lines[2 + len(table.rows) :])  # the legend wrapped


def test_words_and_table_on_a_real_report():
    months = {
        "2019-01": _predictions(10, 1, datetime(2019, 1, 1, tzinfo=UTC), edge=0.15),
        "2019-02": _predictions(10, 2, datetime(2019, 2, 1, tzinfo=UTC), edge=0.15),
    }
    report = vd.verdict(months, vd.VerdictConfig(fee_bps=2.0, resamples=100))
    sentence = vw.verdict(report)
    excess = report["trading"]["lstm_minus_best_net"]
    assert f"summed daily net returns {excess['mean'] * 100:+.1f} points" in sentence
    assert "After a 2 bps fee" in sentence and "2 test months, 1 training seed" in sentence
    assert [row[0] for row in vw.table(report).rows][:1] == ["LSTM"]
