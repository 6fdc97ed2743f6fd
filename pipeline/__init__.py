"""kdpipe.pipeline."""
