"""The MPLP maths: the optimizee, the learners (neural and Table 2's), the message-passing
backward (dense reference and the fast engine with its C++ kernels), batch entropy, the inner
unroll, and the experiment configuration they read.  Depends on nothing else in ``mplp``."""
