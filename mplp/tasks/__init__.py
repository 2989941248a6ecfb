"""Inner problems: the sinewave and MNIST task families, their fixed validation sets, and the
MNIST data file.  Depends on ``mplp.core``."""
