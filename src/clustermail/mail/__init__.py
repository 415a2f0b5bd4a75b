"""Layer 3: the messaging server."""
