"""hybridopt: hybrid zeroth-/first-order random-reshuffling SGD (HybridRR) for any torch objective.

The zeroth-order block x (at LLM scale: the base weights) moves along a two-point estimate
from function values; the first-order block y (the PEFT module) along its backprop gradient;
one fresh permutation of the n components per epoch.  See ``theory/`` for the convergence
framework and ``benchmarks/`` for LLM fine-tuning built on this core.
"""
from .blocks import split_blocks
from .config import HybridConfig, lr_multiplier
from . import distributed
from .directions import Directions, Perturbation
from .distributed import Communicator
from .loop import train
from .optimizer import HybridOptimizer, StepStats, ZOLogEntry, replay_zo_log
from .problem import ModuleProblem, Problem, TensorProblem
from .sampling import RandomReshuffling
from .trace import Trace
from .methods import METHODS
from .types import DIRECTIONS, ESTIMATORS

__version__ = "0.1.0"

__all__ = [
    "Communicator", "DIRECTIONS", "ESTIMATORS", "METHODS", "Directions", "HybridConfig", "HybridOptimizer",
    "ModuleProblem", "Perturbation", "Problem", "RandomReshuffling", "StepStats", "TensorProblem",
    "Trace", "ZOLogEntry", "lr_multiplier", "replay_zo_log", "split_blocks", "train",
]
