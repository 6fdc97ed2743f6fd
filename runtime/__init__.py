"""kdpipe.runtime: what training and inference stages share at run time.

The training loop (`train_loop.py`), batched inference (`inference.py`), checkpoints with their
lineage (`checkpoints.py`), and reading model inputs from an ingested store (`model_data.py`,
`camera_data.py`). Stages assemble these; none of it is a stage.
"""
