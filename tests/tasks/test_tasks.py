import math

import pytest
import torch

from mplp.core.config import TaskConfig
from mplp.tasks.families import BatchTask, MNISTFamily, SinewaveFamily, make_family, validation_set

from helpers import tiny_config


def test_sinewave_task_is_a_fixed_sample_walked_in_order(gen):
    cfg = TaskConfig(batch_size=4, amplitude=(1.0, 5.0))
    task = SinewaveFamily(cfg).sample(gen, T=10)
    assert task.x.shape == (44, 1) and task.n_batches == 11
    xs, ys = task.batches(2, 3)
    assert xs.shape == (3, 4, 1) and torch.equal(xs[0], task.x[8:12]) and torch.equal(xs[2], task.x[16:20])
    assert task.x.min() >= -5 and task.x.max() <= 5
    # y = a sin(x + p) with one a, p per task: recover them by least squares
    A = torch.cat([torch.sin(task.x), torch.cos(task.x)], 1).double()
    coef = torch.linalg.lstsq(A, task.y.double()).solution.flatten()
    a, p = float(coef.norm()), math.atan2(float(coef[1]), float(coef[0]))
    assert 1 <= a <= 5 and 0 <= p <= math.pi
    assert torch.allclose(A @ coef, task.y.double().flatten(), atol=1e-5)


def test_batches_wrap():
    t = BatchTask(torch.arange(6.0)[:, None], torch.arange(6.0)[:, None], 2)
    xs, _ = t.batches(2, 2)
    assert xs.flatten().tolist() == [4.0, 5.0, 0.0, 1.0]


def test_validation_set_is_shared_across_learner_configs():
    a = validation_set(tiny_config())
    b = validation_set(tiny_config(**{"learner.message_size": 5, "learner.batch_norm": False, "seed": 9}))
    assert torch.equal(a.xs, b.xs) and torch.equal(a.inits[1][0], b.inits[1][0])
    assert a.xs.shape == (2, 9, 8, 1)
    c = validation_set(tiny_config(**{"validation.seed": 8}))
    assert not torch.equal(a.xs, c.xs)


def test_mnist_family_walks_the_training_split():
    cfg = TaskConfig(name="mnist", batch_size=16, subset=320)
    fam = make_family(cfg)
    assert isinstance(fam, MNISTFamily) and fam.continue_cursor
    xs, ys = fam.sample(None, 5).batches(0, 2)
    assert xs.shape == (2, 16, 784) and ys.shape == (2, 16) and ys.dtype == torch.int64
    assert ys[0, :5].tolist() == [5, 0, 4, 1, 9]   # the original MNIST training order
    val = fam.validation_tasks(3, None, 5)
    assert len(val) == 3 and val[0].y[:3].tolist() == [7, 2, 1]  # test split
    with pytest.raises(ValueError, match="fewer than T"):
        fam.validation_tasks(1, None, 100)
