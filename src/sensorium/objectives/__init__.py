"""Losses as nn.Modules that work on one process and across processes."""
