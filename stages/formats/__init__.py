"""kdpipe.stages.formats."""
