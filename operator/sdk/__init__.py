"""A Python SDK and the interpctl CLI for the three resources (no torch needed)."""
