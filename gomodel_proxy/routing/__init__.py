"""Which provider answers a request: model resolution (aliases, failover and balancing come later)."""
