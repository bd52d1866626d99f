"""Vector index over any modality and search."""
