"""cnnsweep: controlled studies of CNN training settings.

Grids of configurations over seeds, each trained fast with early stopping; every result stored,
none lost or run twice; a report that answers the study's questions.
"""

__version__ = "0.7.11"
