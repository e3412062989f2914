"""One module per figure of the paper; each function draws from the tidy tables or the per-phase metrics, writes a
PNG and a PDF, and returns the (closed) matplotlib Figure so tests can read back what was plotted. A figure whose
runs are missing from the configuration is still written, saying so, so every configuration yields the same files."""
