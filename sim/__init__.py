"""chaossim: a discrete-event simulator for chaos-testing distributed LLM training.

The package is organised by concept: ``scenario`` (the typed scenario model), ``units`` (unit strings),
``hardware`` and ``topology`` (what exists), ``faults`` (what breaks), ``network`` (WAN transfers),
``learner`` and ``policies`` (how training reacts), ``syncer`` (the Decoupled DiLoCo decision),
``surrogate`` (real numbers to merge), ``metrics`` (the chip-time ledger) and ``runner`` (the only module
that knows them all).
"""

__version__ = "0.1.0"
