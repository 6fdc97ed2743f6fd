"""Feature distillation methods, registered by name (`list_kd()`, `create_kd(name, shapes)`),
and `KDLoss`, the objective that sums them onto the student's detection loss."""
from __future__ import annotations

from . import methods  # noqa: F401 -- registers the methods
from .base import KDMethod, KDShapes, KDTerm, create_kd, get_kd, list_kd, register_kd
from .loss import KDLoss

__all__ = ["KDLoss", "KDMethod", "KDShapes", "KDTerm", "create_kd", "get_kd", "list_kd",
           "register_kd"]
