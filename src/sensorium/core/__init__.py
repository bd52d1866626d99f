"""What every layer may use: config loading, errors, files (JSON, safetensors, state directories), progress."""
