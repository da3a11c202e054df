"""The trainer: evolutionary RL (GNN soft actor-critic + Boltzmann chromosomes) over placements.

`train(model, example_inputs, dram_budget=..., ...)` returns a TrainResult whose
`.policy` is the fastest placement found within the DRAM budget; see erl.py.
"""

from .config import TrainConfig
from .erl import Generation, TrainResult, train
from .workers import ModelSpec, RemoteWorkers

__all__ = ["Generation", "ModelSpec", "RemoteWorkers", "TrainConfig", "TrainResult", "train"]
