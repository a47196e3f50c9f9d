"""Ingest: competitive-programming sources -> verified, deduplicated, leak-free dataset artifact (docs/ingest.md)."""
