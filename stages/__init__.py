"""kdpipe.stages."""
