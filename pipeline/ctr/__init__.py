"""CTR domain: Avazu formats, the synthetic Avazu world, normalization, vocabulary and encoding."""
