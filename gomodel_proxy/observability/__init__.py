"""Logs, metrics and the per-request record that feeds them."""
