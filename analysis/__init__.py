"""Results in, figures and reports out: the half of chaossim that owns pandas and matplotlib.

The simulator (:mod:`sim`) writes rows (summaries, state intervals, events, time series) and never
plots. This package reads them back as tidy DataFrames (:mod:`analysis.load`), draws figures that
each take a DataFrame and a matplotlib ``Axes`` (:mod:`analysis.figures`), and assembles a
self-contained HTML report (:mod:`analysis.report`, behind ``chaossim report``). Units and colours
shared by all of them live in :mod:`analysis.labels`.
"""

from .load import Results, ResultsError, concat, flatten, load_many, load_results
from .report import write_report

__all__ = ["Results", "ResultsError", "concat", "flatten", "load_many", "load_results", "write_report"]
