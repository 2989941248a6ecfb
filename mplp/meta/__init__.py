"""Meta-training: the outer optimiser, gradient estimators, the meta-trainer and its training
loop, the tuned hand-designed baselines, and ``Store`` (results that are read, or computed and
stored).  Depends on ``core``, ``tasks`` and ``store``."""
