"""The score stage: how informative each candidate of a pool is given a training set (Ψ,
MaxEnt's σ² and its rank), how redundant each training configuration is (leave-one-out
σ²), and the set's log det; in memory, streamed under a memory limit and over MPI ranks,
the same bits. :func:`run` is its front door; :mod:`mlpdesign.score.stage` holds the work,
:mod:`mlpdesign.score.sets` the training set, the candidates' space and σ² by blocks."""

from mlpdesign.score.stage import Scores, run, write_scores

__all__ = ["Scores", "run", "write_scores"]
