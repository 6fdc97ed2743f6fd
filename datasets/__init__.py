"""kdpipe.datasets: raw formats, per-format ingest, the ingested store and the synthetic world.

`formats/` parses raw files (one `FormatError` per bad file), `vod.py` / `nuscenes.py` /
`kitti_radar.py` turn one group of frames into store rows (`common.py`: what they share), each
registering its config model and tasks as an `IngestFormat` (`ingest_format.py`), and `synth/`
writes a procedural world in the real on-disk formats.
"""
