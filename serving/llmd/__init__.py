"""LLM-D: the KV-cache-aware router, scheduler and indexer in front of vLLM engines (`odh llmd`)."""
