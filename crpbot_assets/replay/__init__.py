"""Local replay server: deterministic stand-ins for Coinbase, Reddit, alternative.me and Google Trends."""
