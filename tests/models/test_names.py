"""`kdpipe.schemas.model_names` (torch-free, checked at plan time) lists exactly the registry's
models."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic_core import PydanticCustomError

from kdpipe.models import list_models
from kdpipe.schemas.model_names import MODEL_NAMES, check_model_name


def test_names_equal_the_registry() -> None:
    assert list(MODEL_NAMES) == list_models()


def test_names_module_needs_no_torch() -> None:
    code = ("import sys; from kdpipe.schemas.model_names import MODEL_NAMES, KD_METHODS; "
            "assert MODEL_NAMES and KD_METHODS and 'torch' not in sys.modules")
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo)


def test_unknown_name_lists_the_known_ones() -> None:
    assert check_model_name("radar-only") == "radar-only"
    with pytest.raises(PydanticCustomError, match="unknown model 'nope' \\(known: imkd-student"):
        check_model_name("nope")



def test_a_plugin_model_is_known_once_registered() -> None:
    from torch import nn

    from kdpipe.models.registry import _REGISTRY, register_model
    from kdpipe.stages.teacher_train import TeacherTrainConfig

    @register_model("plugin-model-test")
    def _plugin() -> nn.Module:
        return nn.Linear(2, 2)

    try:
        assert TeacherTrainConfig(model="plugin-model-test").model == "plugin-model-test"
    finally:
        _REGISTRY.pop("plugin-model-test")
    with pytest.raises(ValueError, match="unknown model 'plugin-model-test'"):
        TeacherTrainConfig(model="plugin-model-test")
