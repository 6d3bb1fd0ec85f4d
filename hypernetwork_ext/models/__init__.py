"""Small models built in code, for tests and the built-in demonstration (no download needed)."""
