"""The C++ broadcast-ReLU-reduce kernels against their torch formulas and autograd."""

import pytest
import torch

from mplp.core import kernels

from helpers import rel_err

pytestmark = pytest.mark.skipif(not kernels.load(), reason=f"C++ kernels unavailable: {kernels.backend()}")

# (P, B, I, J, H): the generic path (H = 6) and the compile-time sizes (40, 50, 80); odd and
# even I, since the adjoints work through the inputs two at a time
SHAPES = [(1, 7, 5, 4, 6), (3, 5, 4, 3, 6), (2, 6, 5, 4, 40), (1, 3, 4, 5, 80), (2, 3, 3, 5, 50)]


def _inputs(P, B, I, J, H, which, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype).requires_grad_(True)
    s = r(P, B, I) if which == "f" else r(P, I, J)
    return r(P, B, J, H), s, r(P, H), r(P, H)


def _grads(fn, args, seed=1):
    out = fn(*args)
    G = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return out, torch.autograd.grad(out, args, G)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("which", ["f", "g"])
def test_kernel_and_its_adjoint_equal_the_torch_formula(shape, which):
    fn, ref = (kernels.f_reduce, kernels.f_reduce_torch) if which == "f" else (kernels.g_reduce, kernels.g_reduce_torch)
    args = _inputs(*shape, which)
    out, grads = _grads(fn, args)
    out_ref, grads_ref = _grads(ref, args)
    assert out.shape == out_ref.shape
    assert rel_err(out, out_ref) < 1e-13
    for a, b in zip(grads, grads_ref):
        assert rel_err(a, b) < 1e-12


@pytest.mark.parametrize("which", ["f", "g"])
def test_adjoint_passes_gradcheck(which):
    """Finite differences, independently of the torch formula."""
    args = _inputs(2, 3, 3, 2, 5, which)
    fn = kernels.f_reduce if which == "f" else kernels.g_reduce
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("which", ["f", "g"])
def test_leading_dimensions_broadcast(which):
    """Validation batches runs under one theta: A and s carry a run dimension, w and c do not."""
    A, s, w, c = _inputs(3, 4, 3, 2, 6, which)
    w1, c1 = w[0].detach().requires_grad_(True), c[0].detach().requires_grad_(True)
    fn, ref = (kernels.f_reduce, kernels.f_reduce_torch) if which == "f" else (kernels.g_reduce, kernels.g_reduce_torch)
    out, grads = _grads(fn, (A, s, w1, c1))
    out_ref, grads_ref = _grads(ref, (A, s, w1, c1))
    assert rel_err(out, out_ref) < 1e-13
    assert grads[2].shape == w1.shape
    for a, b in zip(grads, grads_ref):
        assert rel_err(a, b) < 1e-12
    # no leading dimension at all
    out1 = fn(A[0], s[0], w1, c1)
    assert rel_err(out1, out[0]) < 1e-15


@pytest.mark.parametrize("which", ["f", "g"])
def test_results_do_not_depend_on_the_thread_count(which):
    args = _inputs(2, 8, 7, 6, 80, which, torch.float32)
    fn = kernels.f_reduce if which == "f" else kernels.g_reduce
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _grads(fn, args)
        torch.set_num_threads(2)
        two = _grads(fn, args)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one[0], two[0])
    for a, b in zip(one[1], two[1]):
        assert torch.equal(a, b)


def test_relu_operator_is_relu_with_its_gradient():
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    y, (gx,) = _grads(kernels.relu, (x,))
    y_ref, (gx_ref,) = _grads(torch.relu, (x,))
    assert torch.equal(y, y_ref) and torch.equal(gx, gx_ref)


@pytest.mark.parametrize("H", [6, 40])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_inputs_sharing_one_value_are_exact(H, dtype):
    """MNIST's background: most entries of a data input share its smallest value; the kernels
    sum those at once.  Same values and gradients as the torch formula (member 1 has too few
    shared entries and takes the general path)."""
    P, B, I, J = 2, 6, 9, 4
    A, _, w, c = _inputs(P, B, I, J, H, "f", dtype)
    g = torch.Generator().manual_seed(3)
    s = torch.randn(P, B, I, generator=g, dtype=dtype)
    s[0] = torch.where(torch.rand(B, I, generator=g) < 0.8, torch.full_like(s[0], -0.4242), s[0].abs())
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    G = torch.randn(P, I, J, H, generator=g, dtype=dtype)
    out, out_ref = kernels.f_reduce(A, s, w, c), kernels.f_reduce_torch(A, s, w, c)
    grads = torch.autograd.grad(out, (A, w, c), G)
    grads_ref = torch.autograd.grad(out_ref, (A, w, c), G)
    assert rel_err(out, out_ref) < tol
    for a, b in zip(grads, grads_ref):
        assert rel_err(a, b) < tol
