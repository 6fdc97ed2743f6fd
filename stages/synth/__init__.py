"""kdpipe.stages.synth."""
