"""Tables (pandas) and figures (matplotlib) made from the per-phase metrics."""
