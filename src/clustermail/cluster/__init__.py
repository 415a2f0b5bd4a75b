"""Layer 2: the cluster service."""
