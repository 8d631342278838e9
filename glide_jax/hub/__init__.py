"""Where models come from: names, model directories, training workdirs, the embedded assets and OpenAI's
released checkpoints (download, the torch-free .pt reader, conversion to Flax)."""
