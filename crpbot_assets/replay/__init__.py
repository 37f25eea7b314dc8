"""The replay server: loopback doubles of Coinbase, alternative.me, Reddit and Google Trends for tests, the
demo and local development (`crpbot-replay`).

A development tool, not part of the product: no module that production runs imports it (a test enforces
this), and it needs nothing beyond the core dependencies, so it has no extra of its own. `protocol.py` holds
the request/response types, `server.py` the HTTP server, one module per service the wire format and the
synthetic data; `README.md` lists which real behaviours each service reproduces.
"""
