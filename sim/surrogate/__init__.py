"""Surrogate training workload: real numbers for the simulated learners to train and the syncer to merge.

Every learner holds the parameter vector of a small MLP trained with AdamW on its own shard of a synthetic
non-convex classification task; the synchronizer's merges (weighted mean or radial-directional averaging,
then outer Nesterov SGD per fragment) act on those vectors. The simulator decides *when* and *with whom*;
this package supplies the numerics, so a run can report held-out loss next to goodput.

Modules: ``data`` (task and shards), ``kernels`` (Numba kernels and the flat parameter layout),
``model`` (the ``Surrogate`` state and its API).
"""

from .data import Dataset, make_dataset
from .kernels import param_count
from .model import GlobalSnapshot, LearnerSnapshot, Surrogate, balanced_slices

__all__ = ["Dataset", "GlobalSnapshot", "LearnerSnapshot", "Surrogate", "balanced_slices", "make_dataset",
           "param_count"]
