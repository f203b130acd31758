"""The request chain: authentication, rate limits, budgets (and later guardrails, cache)."""
