"""Datasets and formats: WebDataset shards, manifests, folders; built-in dataset builders."""
