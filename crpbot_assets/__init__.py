"""crpbot: Coinbase candles + sentiment -> causal features -> LSTM models, as Dagster assets."""
