"""Sensorium: unified multimodal models on PyTorch — align, fuse, retrieve, answer and serve any modality."""

__version__ = "0.1.0"
