"""Surrogate training workload: real numbers for the simulated learners to train and the syncer to merge.

Every learner holds the parameter vector of a small model trained with AdamW on its own shard of a
synthetic task (an MLP classifier on a non-convex Gaussian mixture, or a bigram model on drifting
Markov text); the synchronizer's merges (weighted mean or radial-directional averaging,
then outer Nesterov SGD per fragment) act on those vectors. The simulator decides *when* and *with whom*;
this package supplies the numerics, so a run can report held-out loss next to goodput.

Modules: ``data`` (the mixture and its shards), ``kernels`` (Numba kernels: MLP, AdamW, outer step,
merges, quantiser), ``mlp`` and ``markov`` (the two tasks), ``model`` (the ``Surrogate`` state and its
API), ``reference`` (NumPy twins of the kernels, for tests and the benchmark).
"""

from .data import Dataset, make_dataset
from .kernels import param_count
from .markov import MarkovTask
from .mlp import MLPTask
from .model import GlobalSnapshot, LearnerSnapshot, Surrogate, balanced_slices

__all__ = ["Dataset", "GlobalSnapshot", "LearnerSnapshot", "MLPTask", "MarkovTask", "Surrogate",
           "balanced_slices", "make_dataset", "param_count"]
