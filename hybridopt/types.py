"""The package's vocabulary: method, estimator and direction names, and type aliases."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

Params = Sequence[torch.Tensor]
#: A mini-batch of component indices: shape (b,), or (R, b) with R replicates.
Batch = torch.Tensor
Callback = Callable[[Any], None]

#: The five methods are configurations of one optimizer (which block is ZO, which is FO).
METHODS = ("fo-full", "fo-peft", "zo-full", "zo-peft", "hybrid")
#: central: the theorem's two-point estimator; forward: (f(x+mu u) - f(x))/mu * u.
ESTIMATORS = ("central", "forward")
DIRECTIONS = ("gaussian", "rademacher", "sphere")
FO_OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "linear", "cosine")
