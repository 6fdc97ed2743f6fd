"""kdpipe.models."""
