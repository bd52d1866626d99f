"""Composed models: aligned towers, unified encoders, vision-language decoders."""
