"""kdpipe.schemas."""
