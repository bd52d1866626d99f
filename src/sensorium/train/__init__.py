"""The training loop, checkpointing and logging."""
