"""Cost-model pieces that stand on their own (the intra-layer loop nests)."""
