"""Guardrails: checks and rewrites of prompts and answers, run in priority order."""
