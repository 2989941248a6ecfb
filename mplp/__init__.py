"""mplp: Message Passing Learning Protocol (Randazzo et al. 2020) as meta-trained in
Simons (2023), *The Training of Neural Networks that can Train Neural Networks*.

Vocabulary (see CONTRIBUTING.md): ``theta`` meta-parameters (learner weights),
``inner_state`` / ``params`` optimizee weights, ``K`` truncation, ``T`` horizon,
``S`` outer steps, ``lr`` inner learning rate, ``seed``.
"""

__version__ = "0.1.0"
