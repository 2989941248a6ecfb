import torch

from mplp.core.config import MetaConfig
from mplp.meta.outer import AdamState, adam_init, adam_update


def test_bias_corrected_adam_matches_torch_optim_when_not_clipped(gen):
    theta = {"a": torch.randn(4, 3, generator=gen, dtype=torch.float64), "lr": torch.tensor(0.01, dtype=torch.float64)}
    meta = MetaConfig(outer_lr=1e-2, beta1=0.99, beta2=0.999, eps=1e-11, grad_clip=1e9, adam_bias_correction=True)
    ref = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    opt = torch.optim.Adam(ref.values(), lr=1e-2, betas=(0.99, 0.999), eps=1e-11)
    state = adam_init(theta)
    for _ in range(5):
        grads = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in theta.items()}
        theta, state = adam_update(theta, grads, state, meta)
        for k, p in ref.items():
            p.grad = grads[k].clone()
        opt.step()
    assert state.step == 5
    for k in theta:
        assert torch.allclose(theta[k], ref[k].detach(), rtol=1e-10, atol=1e-12)


def test_default_adam_is_the_released_codes_without_bias_correction(gen):
    """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; theta -= lr m / (sqrt(v) + eps), no 1 - b^t
    (the golden tensors check it against the code itself: tests/test_peer.py)."""
    meta = MetaConfig(outer_lr=1e-3, beta1=0.99, beta2=0.999)
    assert meta.adam_bias_correction is False
    theta = {"a": torch.randn(5, generator=gen, dtype=torch.float64)}
    state, m, v, ref = adam_init(theta), torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64), theta["a"]
    for _ in range(3):
        g = torch.randn(5, generator=gen, dtype=torch.float64)
        theta, state = adam_update(theta, {"a": g}, state, meta)
        g = g.clamp(-1, 1)                                    # clipped first, as the code
        m, v = 0.99 * m + 0.01 * g, 0.999 * v + 0.001 * g * g
        ref = ref - 1e-3 * m / (v.sqrt() + meta.eps)
    assert torch.allclose(theta["a"], ref, rtol=0, atol=1e-15)
    # at step 1 the code's step is (1 - b1) / sqrt(1 - b2) = 0.316 of the corrected one
    one, _ = adam_update({"a": torch.zeros(1)}, {"a": torch.ones(1)}, adam_init({"a": torch.zeros(1)}), meta)
    corr, _ = adam_update({"a": torch.zeros(1)}, {"a": torch.ones(1)}, adam_init({"a": torch.zeros(1)}),
                          MetaConfig(outer_lr=1e-3, beta1=0.99, beta2=0.999, adam_bias_correction=True))
    assert abs(float(one["a"] / corr["a"]) - 0.01 / 0.001 ** 0.5) < 1e-6


def test_gradient_is_clipped_before_the_moments():
    theta = {"a": torch.zeros(2)}
    meta = MetaConfig(outer_lr=1.0, grad_clip=1.0)
    _, s_big = adam_update(theta, {"a": torch.tensor([50.0, -0.5])}, adam_init(theta), meta)
    assert torch.allclose(s_big.m["a"], (1 - meta.beta1) * torch.tensor([1.0, -0.5]))
    assert torch.allclose(s_big.v["a"], (1 - meta.beta2) * torch.tensor([1.0, 0.25]))


def test_state_round_trip():
    theta = {"a": torch.ones(2)}
    s = adam_init(theta)
    s2 = AdamState.from_state_dict(s.state_dict())
    assert s2.step == 0 and torch.equal(s2.m["a"], s.m["a"])
