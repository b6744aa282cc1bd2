"""The package's vocabulary: type aliases and the FO optimizer and schedule names.

Methods, estimators, direction laws and ZO rules are registries of their own:
:mod:`hybridopt.methods`, :mod:`hybridopt.estimators`, :mod:`hybridopt.laws`,
:mod:`hybridopt.zo_rules`."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

Params = Sequence[torch.Tensor]
#: A mini-batch of component indices: shape (b,), or (R, b) with R replicates.
Batch = torch.Tensor
Callback = Callable[[Any], None]

FO_OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "linear", "cosine")
