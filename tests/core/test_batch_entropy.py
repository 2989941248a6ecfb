import math

import pytest
import torch

from mplp.core.batch_entropy import batch_entropy, entropy_penalty


def test_formula_code_and_text(gen):
    h = torch.randn(64, 5, generator=gen, dtype=torch.float64)
    s2 = h.std(0) ** 2
    assert torch.allclose(batch_entropy(h), (0.5 * torch.log(math.pi * math.e * s2 + 1)).mean())
    assert torch.allclose(batch_entropy(h, "text"), (0.5 * torch.log(2 * math.pi * math.e * s2 + 1)).mean())
    assert batch_entropy(torch.ones(8, 3)).item() == 0.0  # dead layer: no information


def test_penalty_is_eq_8():
    dead = torch.zeros(8, 4)                          # H = 0 -> penalty 0.5
    alive = torch.randn(256, 4, generator=torch.Generator().manual_seed(0)) * 10  # H >> 0.5 -> 0
    assert entropy_penalty([dead, alive]).item() == pytest.approx(0.25)
    assert entropy_penalty([alive]).item() == 0.0
    assert entropy_penalty([dead], threshold=0.8).item() == pytest.approx(0.8)


def test_leading_dims_and_errors():
    h = torch.randn(3, 16, 4, generator=torch.Generator().manual_seed(1))
    assert batch_entropy(h).shape == (3,)
    with pytest.raises(ValueError, match="at least 2"):
        batch_entropy(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="unknown batch-entropy formula"):
        batch_entropy(h, "4pi")
