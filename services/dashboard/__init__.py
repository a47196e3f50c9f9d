"""The dashboard: live web pages over the bus (stream, registry KV, consumers, artifacts); no state of its own."""
