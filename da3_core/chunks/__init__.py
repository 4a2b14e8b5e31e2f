"""Chunked runs: any number of frames in bounded memory (plan, store, orchestration, assembly)."""
