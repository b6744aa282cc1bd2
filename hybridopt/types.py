"""The package's vocabulary: method, estimator and direction names, and type aliases."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

Params = Sequence[torch.Tensor]
#: A mini-batch of component indices: shape (b,), or (R, b) with R replicates.
Batch = torch.Tensor
Callback = Callable[[Any], None]

#: central: the theorem's two-point estimator; forward: (f(x+mu u) - f(x))/mu * u.
ESTIMATORS = ("central", "forward")
DIRECTIONS = ("gaussian", "rademacher", "sphere")
FO_OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "linear", "cosine")
