"""hybridopt: hybrid zeroth-/first-order random-reshuffling SGD (HybridRR) for any torch objective.

The zeroth-order block x (at LLM scale: the base weights) moves along a two-point estimate
from function values; the first-order block y (the PEFT module) along its backprop gradient;
one fresh permutation of the n components per epoch.  See ``theory/`` for the convergence
framework and ``benchmarks/`` for LLM fine-tuning built on this core.
"""
from . import distributed
from .blocks import split_blocks
from .config import HybridConfig, lr_multiplier
from .directions import Directions, Pair, Perturbation
from .distributed import Communicator
from .estimators import ESTIMATORS
from .laws import LAWS
from .loop import train
from .methods import METHODS
from .optimizer import HybridOptimizer, StepStats, ZOLogEntry, replay_zo_log
from .problem import ModuleProblem, Problem, TensorProblem
from .sampling import RandomReshuffling
from .sweep import SweepContext
from .trace import Trace
from .zo_rules import ZO_RULES

#: names of the registered direction laws (:mod:`hybridopt.laws`)
DIRECTIONS = tuple(LAWS)

__version__ = "0.1.0"

__all__ = [
    "Communicator", "DIRECTIONS", "ESTIMATORS", "LAWS", "METHODS", "ZO_RULES", "Directions", "HybridConfig",
    "HybridOptimizer", "ModuleProblem", "Pair", "Perturbation", "Problem", "RandomReshuffling", "StepStats",
    "SweepContext", "TensorProblem", "Trace", "ZOLogEntry", "lr_multiplier", "replay_zo_log", "split_blocks",
    "train",
]
