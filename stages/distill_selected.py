"""`distill-selected`: `distill` whose pseudo-labeled (SSOD) frames are a `curate` selection.

The same stage with one more input port, `selection` (ports cannot be optional, so the variant is
a second stage rather than a flag). Use it in place of `distill`, or next to it as an instance:

    [workflow]
    stages = [..., "pseudo-label", "curate", "distill-selected"]

`distill._frames` keeps the unlabeled frames that are in the selection; every selected frame
must have pseudo-labels (a ConfigError names the first that has none).
"""
from __future__ import annotations

from dataclasses import replace

from kdpipe.pipeline.stage import ParquetArtifact, Port
from kdpipe.stages.distill import STAGE as DISTILL

STAGE = replace(
    DISTILL, name="distill-selected",
    inputs=(*DISTILL.inputs, Port("selection", ParquetArtifact, "selection/1")),
    description="distill on the frames of a curate selection (SSOD term) only",
)
