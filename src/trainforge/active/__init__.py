"""Active learning: pick the pool rows whose labels would teach the model most, and measure the gain."""
