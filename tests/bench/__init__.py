"""The benchmark script itself: that it runs and reports, never how fast anything is."""
