"""usage_pipeline: an exact, deduplicated ledger of OpenRouter LLM usage."""
