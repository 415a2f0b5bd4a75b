"""Layer 2: the cluster service. This package's pure core: model, configuration, placement."""
