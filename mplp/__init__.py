"""mplp: Message Passing Learning Protocol (Randazzo et al. 2020) as meta-trained in
Simons (2023), *The Training of Neural Networks that can Train Neural Networks*.

Vocabulary (see CONTRIBUTING.md): ``theta`` meta-parameters (learner weights),
``inner_state`` / ``params`` optimizee weights, ``K`` truncation, ``T`` horizon,
``S`` outer steps, ``lr`` inner learning rate, ``seed``.
"""

__version__ = "0.1.0"


def __getattr__(name):
    """``mplp.optimize``: train an MLP with one of the book's trained MPLPs (``mplp.pretrained``),
    imported on first use so that ``import mplp`` stays light."""
    if name == "optimize":
        from mplp.pretrained import optimize

        return optimize
    raise AttributeError(f"module 'mplp' has no attribute {name!r}")
