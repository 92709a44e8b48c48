"""PyTorch backend: data loading, models built from IR graphs, search and training."""
