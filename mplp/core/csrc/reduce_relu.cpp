// The two broadcast-ReLU-reduce layers of the factorised learners (mplp/fast.py) and
// their adjoints, as CPU kernels that never build the B x I x J x H tensor.
//
//   f_reduce: R[p,i,j,h] = 1/B sum_b relu(A[p,b,j,h] + s[p,b,i] w[p,h] + c[p,h])
//   g_reduce: S[p,b,i,h] =     sum_j relu(A[p,b,j,h] + s[p,i,j] w[p,h] + c[p,h])
//
// A holds the message features' share of a learner's first layer, s the scalar feature
// (the layer input x_bi for f, the weight w_ij for g_lin, both batch-normalised), w its
// row of the first layer and c the bias.  Every output element and every partial sum is
// accumulated by one thread in a fixed order, and partials are summed in a fixed order
// after the parallel region, so results do not depend on the number of threads.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

// out[q,:] = s[q] * w[q / rows,:] + c[q / rows,:] for the P * rows scalars of s
template <typename T>
void affine_rows(const T* s, const T* w, const T* c, T* out, int64_t P, int64_t rows, int64_t H) {
  at::parallel_for(0, P * rows, 256, [&](int64_t lo, int64_t hi) {
    for (int64_t q = lo; q < hi; ++q) {
      const int64_t p = q / rows;
      const T sv = s[q];
      const T* __restrict wp = w + p * H;
      const T* __restrict cp = c + p * H;
      T* __restrict o = out + q * H;
      for (int64_t h = 0; h < H; ++h) o[h] = sv * wp[h] + cp[h];
    }
  });
}

// R (P,I,J,H) from A (P,B,J,H) and the scalar feature s (P,B,I), w, c (P,H)
template <typename T, int HC>
void f_forward(const T* A, const T* s, const T* w, const T* c, T* R, int64_t P, int64_t B, int64_t I, int64_t J,
               int64_t H_) {
  const int64_t H = HC > 0 ? HC : H_;   // a compile-time constant for the common sizes
  at::parallel_for(0, P * I, 1, [&](int64_t lo, int64_t hi) {
    std::vector<T> Cl(B * H);            // C[b, h] = s[b, i] w[h] + c[h] for this (p, i)
    for (int64_t q = lo; q < hi; ++q) {
      const int64_t p = q / I, i = q % I;
      for (int64_t b = 0; b < B; ++b) {
        const T sv = s[(p * B + b) * I + i];
        for (int64_t h = 0; h < H; ++h) Cl[b * H + h] = sv * w[p * H + h] + c[p * H + h];
      }
      for (int64_t j = 0; j < J; ++j) {
        T* __restrict out = R + (q * J + j) * H;
        for (int64_t h = 0; h < H; ++h) out[h] = T(0);
        for (int64_t b = 0; b < B; ++b) {
          const T* __restrict a = A + ((p * B + b) * J + j) * H;
          const T* __restrict cb = Cl.data() + b * H;
          for (int64_t h = 0; h < H; ++h) {
            const T v = a[h] + cb[h];
            out[h] += v > T(0) ? v : T(0);
          }
        }
        for (int64_t h = 0; h < H; ++h) out[h] /= T(B);
      }
    }
  });
}

// Scratch rows of length H: on the stack for the compile-time sizes, else on the heap
template <typename T, int HC, int N>
struct Rows {
  alignas(64) T fixed[HC > 0 ? N * HC : 1];
  std::vector<T> heap;
  T* row[N];
  explicit Rows(int64_t H) : heap(HC > 0 ? 0 : N * H) {
    for (int k = 0; k < N; ++k) row[k] = (HC > 0 ? fixed : heap.data()) + k * H;
  }
};

// The adjoint of NB rows of one reduce at once, over n terms t: term t reads the A row at
// a_off(t) and the output gradient rows at g_off(t, k), adds the masked gradients into the dA
// row at a_off(t) (one write for the NB rows) and into d[k]; the NB rows' scalar features are
// sv[k].  Finished, d[k] gives ds[k] = d[k] . w and adds to the partials dw, dc.
template <typename T, int HC, int NB, typename AOff, typename GOff>
inline void adjoint_rows(const T* A, T* dA, const T* G, AOff a_off, GOff g_off, int64_t n, const T* sv,
                         const T* wp, const T* cp, T* const* ds, T* dw, T* dc, int64_t H_) {
  const int64_t H = HC > 0 ? HC : H_;
  Rows<T, HC, NB> cb(H), d(H);
  for (int k = 0; k < NB; ++k)
    for (int64_t h = 0; h < H; ++h) { cb.row[k][h] = sv[k] * wp[h] + cp[h]; d.row[k][h] = T(0); }
  for (int64_t t = 0; t < n; ++t) {
    const T* __restrict a = A + a_off(t);
    T* __restrict da = dA + a_off(t);
    const T* __restrict g[NB];
    for (int k = 0; k < NB; ++k) g[k] = G + g_off(t, k);
    for (int64_t h = 0; h < H; ++h) {
      const T av = a[h];
      T sum = T(0);
      for (int k = 0; k < NB; ++k) {
        const T v = (av + cb.row[k][h]) > T(0) ? g[k][h] : T(0);
        d.row[k][h] += v;
        sum += v;
      }
      da[h] += sum;
    }
  }
  for (int k = 0; k < NB; ++k) {
    const T* __restrict dk = d.row[k];
    T acc = T(0);
    for (int64_t h = 0; h < H; ++h) {
      acc += dk[h] * wp[h];
      dw[h] += dk[h] * sv[k];
      dc[h] += dk[h];
    }
    *ds[k] = acc;
  }
}

// Rows i0 .. i0 + NB - 1 of f_reduce's adjoint for one (p, b) = q: terms j
template <typename T, int HC, int NB>
inline void f_backward_rows(const T* G, const T* A, const T* s, const T* wp, const T* cp, T* dA, T* ds, T* dw,
                            T* dc, int64_t p, int64_t q, int64_t i0, int64_t I, int64_t J, int64_t H) {
  T sv[NB];
  T* dsk[NB];
  for (int k = 0; k < NB; ++k) { sv[k] = s[q * I + i0 + k]; dsk[k] = ds + q * I + i0 + k; }
  adjoint_rows<T, HC, NB>(A, dA, G, [&](int64_t j) { return (q * J + j) * H; },
                          [&](int64_t j, int k) { return ((p * I + i0 + k) * J + j) * H; }, J, sv, wp, cp, dsk, dw,
                          dc, H);
}

// Adjoint of f_reduce: dA (P,B,J,H); ds (P,B,I); per-(p,b) partials dwp, dcp (P,B,H).
// G arrives divided by B.
template <typename T, int HC>
void f_backward(const T* G, const T* A, const T* s, const T* w, const T* c, T* dA, T* ds, T* dwp, T* dcp,
                int64_t P, int64_t B, int64_t I, int64_t J, int64_t H_) {
  const int64_t H = HC > 0 ? HC : H_;
  at::parallel_for(0, P * B, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t q = lo; q < hi; ++q) {                 // q = (p, b)
      const int64_t p = q / B;
      T* dAq = dA + q * J * H;
      T* dw = dwp + q * H;
      T* dc = dcp + q * H;
      std::fill(dAq, dAq + J * H, T(0));
      std::fill(dw, dw + H, T(0));
      std::fill(dc, dc + H, T(0));
      int64_t i = 0;
      for (; i + 2 <= I; i += 2)
        f_backward_rows<T, HC, 2>(G, A, s, w + p * H, c + p * H, dA, ds, dw, dc, p, q, i, I, J, H);
      if (i < I)
        f_backward_rows<T, HC, 1>(G, A, s, w + p * H, c + p * H, dA, ds, dw, dc, p, q, i, I, J, H);
    }
  });
}

// S (P,B,I,H) from A (P,B,J,H) and the affine part D (P,I,J,H)
template <typename T, int HC>
void g_forward(const T* A, const T* D, T* S, int64_t P, int64_t B, int64_t I, int64_t J, int64_t H_) {
  const int64_t H = HC > 0 ? HC : H_;   // a compile-time constant for the common sizes
  at::parallel_for(0, P * B, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t q = lo; q < hi; ++q) {                 // q = (p, b)
      const int64_t p = q / B;
      for (int64_t i = 0; i < I; ++i) {
        T* __restrict out = S + (q * I + i) * H;
        for (int64_t h = 0; h < H; ++h) out[h] = T(0);
        for (int64_t j = 0; j < J; ++j) {
          const T* __restrict a = A + (q * J + j) * H;
          const T* __restrict dd = D + ((p * I + i) * J + j) * H;
          for (int64_t h = 0; h < H; ++h) {
            const T v = a[h] + dd[h];
            out[h] += v > T(0) ? v : T(0);
          }
        }
      }
    }
  });
}

// -- inputs with one shared value ------------------------------------------------------------
// Where most s[b, i] of one population member share one value s0 (MNIST: about 81 % of the
// pixels are the background; after batch-norm one value), every such entry adds the same
// P0[b, j, h] = relu(A[b, j, h] + s0 w[h] + c[h]) for any i.  f_reduce then splits exactly into
// Z[j, h] = sum_b P0[b, j, h], shared by all i, and a remainder over the other entries only;
// its adjoint splits the same way.  Used when s needs no gradient (the layer's input is data).

// The smallest value of s[0 .. n) if at least half the entries equal it
template <typename T>
bool shared_value(const T* s, int64_t n, T& s0) {
  T m = s[0];
  for (int64_t k = 1; k < n; ++k) m = s[k] < m ? s[k] : m;
  int64_t count = 0;
  for (int64_t k = 0; k < n; ++k) count += s[k] == m;
  s0 = m;
  return 2 * count >= n;
}

// f_reduce of one member p with shared value s0; R (I, J, H)
template <typename T, int HC>
void f_forward_shared(const T* A, const T* s, const T* w, const T* c, T s0, T* R, int64_t B, int64_t I,
                      int64_t J, int64_t H_) {
  const int64_t H = HC > 0 ? HC : H_;
  std::vector<T> P0(B * J * H), Z(J * H, T(0));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < J; ++j)
      for (int64_t h = 0; h < H; ++h) {
        const T v = A[(b * J + j) * H + h] + (s0 * w[h] + c[h]);
        P0[(b * J + j) * H + h] = v > T(0) ? v : T(0);
      }
  for (int64_t b = 0; b < B; ++b)                    // in b order, as the dense sum
    for (int64_t k = 0; k < J * H; ++k) Z[k] += P0[b * J * H + k];
  at::parallel_for(0, I, 1, [&](int64_t lo, int64_t hi) {
    alignas(64) T cbuf[HC > 0 ? HC : 1];
    std::vector<T> cvec(HC > 0 ? 0 : H);
    T* __restrict cb = HC > 0 ? cbuf : cvec.data();
    for (int64_t i = lo; i < hi; ++i) {
      T* __restrict out = R + i * J * H;
      std::copy(Z.begin(), Z.end(), out);
      for (int64_t b = 0; b < B; ++b) {
        const T sv = s[b * I + i];
        if (sv == s0) continue;
        for (int64_t h = 0; h < H; ++h) cb[h] = sv * w[h] + c[h];
        for (int64_t j = 0; j < J; ++j) {
          const T* __restrict a = A + (b * J + j) * H;
          const T* __restrict p0 = P0.data() + (b * J + j) * H;
          T* __restrict o = out + j * H;
          for (int64_t h = 0; h < H; ++h) {
            const T v = a[h] + cb[h];
            o[h] += (v > T(0) ? v : T(0)) - p0[h];
          }
        }
      }
      for (int64_t k = 0; k < J * H; ++k) out[k] /= T(B);
    }
  });
}

// f_reduce's adjoint of one member p with shared value s0 (G divided by B), no ds:
// dA (B, J, H), per-b partials dwp, dcp (B, H)
template <typename T, int HC>
void f_backward_shared(const T* G, const T* A, const T* s, const T* w, const T* c, T s0, T* dA, T* dwp, T* dcp,
                       int64_t B, int64_t I, int64_t J, int64_t H_) {
  const int64_t H = HC > 0 ? HC : H_;
  std::vector<T> Gsum(J * H, T(0));                   // sum_i G[i, j, h]
  for (int64_t i = 0; i < I; ++i)
    for (int64_t k = 0; k < J * H; ++k) Gsum[k] += G[i * J * H + k];
  at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
    std::vector<T> Gn(J * H);                          // sum of G over this b's other entries
    alignas(64) T cbuf[HC > 0 ? HC : 1], dbuf[HC > 0 ? HC : 1];
    std::vector<T> cvec(HC > 0 ? 0 : H), dvec(HC > 0 ? 0 : H);
    T* __restrict cb = HC > 0 ? cbuf : cvec.data();
    T* __restrict d = HC > 0 ? dbuf : dvec.data();
    for (int64_t b = lo; b < hi; ++b) {
      T* __restrict dAb = dA + b * J * H;
      T* __restrict dw = dwp + b * H;
      T* __restrict dc = dcp + b * H;
      const T* __restrict Ab = A + b * J * H;
      std::fill(dAb, dAb + J * H, T(0));
      std::fill(Gn.begin(), Gn.end(), T(0));
      std::fill(dw, dw + H, T(0));
      std::fill(dc, dc + H, T(0));
      for (int64_t i = 0; i < I; ++i) {
        const T sv = s[b * I + i];
        if (sv == s0) continue;
        for (int64_t h = 0; h < H; ++h) { cb[h] = sv * w[h] + c[h]; d[h] = T(0); }
        for (int64_t j = 0; j < J; ++j) {
          const T* __restrict a = Ab + j * H;
          const T* __restrict g = G + (i * J + j) * H;
          T* __restrict da = dAb + j * H;
          T* __restrict gn = Gn.data() + j * H;
          for (int64_t h = 0; h < H; ++h) {
            const T v = (a[h] + cb[h]) > T(0) ? g[h] : T(0);
            da[h] += v;
            gn[h] += g[h];
            d[h] += v;
          }
        }
        for (int64_t h = 0; h < H; ++h) { dw[h] += d[h] * sv; dc[h] += d[h]; }
      }
      for (int64_t h = 0; h < H; ++h) d[h] = T(0);    // the shared entries, all at once
      for (int64_t j = 0; j < J; ++j) {
        const T* __restrict a = Ab + j * H;
        T* __restrict da = dAb + j * H;
        const T* __restrict gs = Gsum.data() + j * H;
        const T* __restrict gn = Gn.data() + j * H;
        for (int64_t h = 0; h < H; ++h) {
          const T v = (a[h] + (s0 * w[h] + c[h])) > T(0) ? gs[h] - gn[h] : T(0);
          da[h] += v;
          d[h] += v;
        }
      }
      for (int64_t h = 0; h < H; ++h) { dw[h] += d[h] * s0; dc[h] += d[h]; }
    }
  });
}

// Rows i0 .. i0 + NB - 1 of g_reduce's adjoint for one (p, j): terms b
template <typename T, int HC, int NB>
inline void g_backward_rows(const T* G, const T* A, const T* s, const T* wp, const T* cp, T* dA, T* ds, T* dw,
                            T* dc, int64_t p, int64_t j, int64_t i0, int64_t B, int64_t I, int64_t J, int64_t H) {
  T sv[NB];
  T* dsk[NB];
  for (int k = 0; k < NB; ++k) { sv[k] = s[(p * I + i0 + k) * J + j]; dsk[k] = ds + (p * I + i0 + k) * J + j; }
  adjoint_rows<T, HC, NB>(A, dA, G, [&](int64_t b) { return ((p * B + b) * J + j) * H; },
                          [&](int64_t b, int k) { return ((p * B + b) * I + i0 + k) * H; }, B, sv, wp, cp, dsk, dw,
                          dc, H);
}

// Adjoint of g_reduce: dA (P,B,J,H); ds (P,I,J); per-(p,j) partials dwp, dcp (P,J,H)
template <typename T, int HC>
void g_backward(const T* G, const T* A, const T* s, const T* w, const T* c, T* dA, T* ds, T* dwp, T* dcp,
                int64_t P, int64_t B, int64_t I, int64_t J, int64_t H_) {
  const int64_t H = HC > 0 ? HC : H_;
  at::parallel_for(0, P * J, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t q = lo; q < hi; ++q) {                 // q = (p, j): dA[p, :, j] belongs to this thread
      const int64_t p = q / J, j = q % J;
      T* dw = dwp + q * H;
      T* dc = dcp + q * H;
      for (int64_t b = 0; b < B; ++b) std::fill(dA + ((p * B + b) * J + j) * H, dA + ((p * B + b) * J + j + 1) * H, T(0));
      std::fill(dw, dw + H, T(0));
      std::fill(dc, dc + H, T(0));
      int64_t i = 0;
      for (; i + 2 <= I; i += 2)
        g_backward_rows<T, HC, 2>(G, A, s, w + p * H, c + p * H, dA, ds, dw, dc, p, j, i, B, I, J, H);
      if (i < I)
        g_backward_rows<T, HC, 1>(G, A, s, w + p * H, c + p * H, dA, ds, dw, dc, p, j, i, B, I, J, H);
    }
  });
}

// Run f with the hidden size as a compile-time constant where it is one of the thesis'
// (Tables 3-5: 80, 50, 40), so loops unroll and accumulators stay in registers
template <typename F>
void with_hidden(int64_t H, F&& f) {
  switch (H) {
    case 40: f(std::integral_constant<int, 40>{}); break;
    case 50: f(std::integral_constant<int, 50>{}); break;
    case 80: f(std::integral_constant<int, 80>{}); break;
    default: f(std::integral_constant<int, 0>{});
  }
}

void check(const at::Tensor& A, const at::Tensor& s, const at::Tensor& w, const at::Tensor& c, int64_t s_rank) {
  TORCH_CHECK(A.dim() == 4, "A must be (P, B, J, H)");
  TORCH_CHECK(s.dim() == s_rank, "s has the wrong rank");
  TORCH_CHECK(w.dim() == 2 && c.dim() == 2, "w and c must be (P, H)");
  TORCH_CHECK(s.scalar_type() == A.scalar_type() && w.scalar_type() == A.scalar_type() &&
              c.scalar_type() == A.scalar_type(), "all inputs must share one dtype");
  TORCH_CHECK(A.device().is_cpu(), "CPU kernels");
  TORCH_CHECK(w.size(0) == A.size(0) && c.size(0) == A.size(0) && s.size(0) == A.size(0), "population sizes differ");
  TORCH_CHECK(w.size(1) == A.size(3) && c.size(1) == A.size(3), "hidden sizes differ");
}

// sum of the (P, N, H) partials over N, in order
at::Tensor sum_partials(const at::Tensor& part) { return part.sum(1); }

at::Tensor f_reduce(const at::Tensor& A_, const at::Tensor& s_, const at::Tensor& w_, const at::Tensor& c_,
                    bool shared_inputs) {
  check(A_, s_, w_, c_, 3);
  auto A = A_.contiguous(), s = s_.contiguous(), w = w_.contiguous(), c = c_.contiguous();
  const int64_t P = A.size(0), B = A.size(1), J = A.size(2), H = A.size(3), I = s.size(2);
  TORCH_CHECK(s.size(1) == B, "s must be (P, B, I)");
  auto R = at::empty({P, I, J, H}, A.options());
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "f_reduce", [&] {
    with_hidden(H, [&](auto hc) {
      constexpr int HC = decltype(hc)::value;
      const scalar_t *pA = A.data_ptr<scalar_t>(), *ps = s.data_ptr<scalar_t>(), *pw = w.data_ptr<scalar_t>(),
                     *pc = c.data_ptr<scalar_t>();
      scalar_t* pR = R.data_ptr<scalar_t>();
      if (!shared_inputs) {
        f_forward<scalar_t, HC>(pA, ps, pw, pc, pR, P, B, I, J, H);
        return;
      }
      for (int64_t p = 0; p < P; ++p) {
        scalar_t s0;
        if (shared_value(ps + p * B * I, B * I, s0))
          f_forward_shared<scalar_t, HC>(pA + p * B * J * H, ps + p * B * I, pw + p * H, pc + p * H, s0,
                                         pR + p * I * J * H, B, I, J, H);
        else
          f_forward<scalar_t, HC>(pA + p * B * J * H, ps + p * B * I, pw + p * H, pc + p * H,
                                  pR + p * I * J * H, 1, B, I, J, H);
      }
    });
  });
  return R;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> f_reduce_backward(
    const at::Tensor& G_, const at::Tensor& A_, const at::Tensor& s_, const at::Tensor& w_, const at::Tensor& c_,
    bool shared_inputs) {
  check(A_, s_, w_, c_, 3);
  auto A = A_.contiguous(), s = s_.contiguous(), w = w_.contiguous(), c = c_.contiguous();
  const int64_t P = A.size(0), B = A.size(1), J = A.size(2), H = A.size(3), I = s.size(2);
  auto G = (G_ / static_cast<double>(B)).contiguous();   // the mean's 1/B, once
  auto dA = at::empty_like(A), ds = at::empty_like(s);
  auto dwp = at::empty({P, B, H}, A.options()), dcp = at::empty({P, B, H}, A.options());
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "f_reduce_backward", [&] {
    with_hidden(H, [&](auto hc) {
      constexpr int HC = decltype(hc)::value;
      const scalar_t *pG = G.data_ptr<scalar_t>(), *pA = A.data_ptr<scalar_t>(), *ps = s.data_ptr<scalar_t>(),
                     *pw = w.data_ptr<scalar_t>(), *pc = c.data_ptr<scalar_t>();
      scalar_t *pdA = dA.data_ptr<scalar_t>(), *pds = ds.data_ptr<scalar_t>(), *pdw = dwp.data_ptr<scalar_t>(),
               *pdc = dcp.data_ptr<scalar_t>();
      if (!shared_inputs) {
        f_backward<scalar_t, HC>(pG, pA, ps, pw, pc, pdA, pds, pdw, pdc, P, B, I, J, H);
        return;
      }
      ds.zero_();                                        // not asked for
      for (int64_t p = 0; p < P; ++p) {
        scalar_t s0;
        const int64_t oA = p * B * J * H, os = p * B * I, oG = p * I * J * H;
        if (shared_value(ps + os, B * I, s0))
          f_backward_shared<scalar_t, HC>(pG + oG, pA + oA, ps + os, pw + p * H, pc + p * H, s0, pdA + oA,
                                          pdw + p * B * H, pdc + p * B * H, B, I, J, H);
        else
          f_backward<scalar_t, HC>(pG + oG, pA + oA, ps + os, pw + p * H, pc + p * H, pdA + oA, pds + os,
                                   pdw + p * B * H, pdc + p * B * H, 1, B, I, J, H);
      }
    });
  });
  return {dA, ds, sum_partials(dwp), sum_partials(dcp)};
}

at::Tensor g_reduce(const at::Tensor& A_, const at::Tensor& s_, const at::Tensor& w_, const at::Tensor& c_) {
  check(A_, s_, w_, c_, 3);
  auto A = A_.contiguous(), s = s_.contiguous(), w = w_.contiguous(), c = c_.contiguous();
  const int64_t P = A.size(0), B = A.size(1), J = A.size(2), H = A.size(3), I = s.size(1);
  TORCH_CHECK(s.size(2) == J, "s must be (P, I, J)");
  auto D = at::empty({P, I, J, H}, A.options());   // shared by every b
  auto S = at::empty({P, B, I, H}, A.options());
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "g_reduce", [&] {
    affine_rows<scalar_t>(s.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(),
                          D.data_ptr<scalar_t>(), P, I * J, H);
    with_hidden(H, [&](auto hc) {
      g_forward<scalar_t, decltype(hc)::value>(A.data_ptr<scalar_t>(), D.data_ptr<scalar_t>(), S.data_ptr<scalar_t>(),
                                               P, B, I, J, H);
    });
  });
  return S;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> g_reduce_backward(
    const at::Tensor& G_, const at::Tensor& A_, const at::Tensor& s_, const at::Tensor& w_, const at::Tensor& c_) {
  check(A_, s_, w_, c_, 3);
  auto G = G_.contiguous(), A = A_.contiguous(), s = s_.contiguous(), w = w_.contiguous(), c = c_.contiguous();
  const int64_t P = A.size(0), B = A.size(1), J = A.size(2), H = A.size(3), I = s.size(1);
  auto dA = at::empty_like(A), ds = at::empty_like(s);
  auto dwp = at::empty({P, J, H}, A.options()), dcp = at::empty({P, J, H}, A.options());
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "g_reduce_backward", [&] {
    with_hidden(H, [&](auto hc) {
      g_backward<scalar_t, decltype(hc)::value>(G.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
                                                w.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(), dA.data_ptr<scalar_t>(),
                                                ds.data_ptr<scalar_t>(), dwp.data_ptr<scalar_t>(),
                                                dcp.data_ptr<scalar_t>(), P, B, I, J, H);
    });
  });
  return {dA, ds, sum_partials(dwp), sum_partials(dcp)};
}

// relu whose adjoint reads the output (h > 0), so that compiled graphs keep h for the
// backward instead of a separately stored boolean mask (inductor writes those slowly)
at::Tensor relu(const at::Tensor& x_) {
  auto x = x_.contiguous();
  auto out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "relu", [&] {
    const scalar_t* a0 = x.data_ptr<scalar_t>();
    scalar_t* o0 = out.data_ptr<scalar_t>();
    at::parallel_for(0, x.numel(), 16384, [a0, o0](int64_t lo, int64_t hi) {
      const scalar_t* __restrict a = a0;
      scalar_t* __restrict o = o0;
      for (int64_t k = lo; k < hi; ++k) o[k] = a[k] > scalar_t(0) ? a[k] : scalar_t(0);
    });
  });
  return out;
}

at::Tensor relu_backward(const at::Tensor& G_, const at::Tensor& h_) {
  auto G = G_.contiguous(), h = h_.contiguous();
  auto out = at::empty_like(h);
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "relu_backward", [&] {
    const scalar_t* g0 = G.data_ptr<scalar_t>();
    const scalar_t* a0 = h.data_ptr<scalar_t>();
    scalar_t* o0 = out.data_ptr<scalar_t>();
    at::parallel_for(0, h.numel(), 16384, [g0, a0, o0](int64_t lo, int64_t hi) {
      const scalar_t* __restrict g = g0;
      const scalar_t* __restrict a = a0;
      scalar_t* __restrict o = o0;
      for (int64_t k = lo; k < hi; ++k) o[k] = a[k] > scalar_t(0) ? g[k] : scalar_t(0);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(mplp, m) {
  m.def("relu(Tensor x) -> Tensor");
  m.def("relu_backward(Tensor G, Tensor h) -> Tensor");
  // shared_inputs: s is data (no gradient; ds comes back as zeros), so entries equal to a
  // dominant shared value may be handled all at once
  m.def("f_reduce(Tensor A, Tensor s, Tensor w, Tensor c, bool shared_inputs) -> Tensor");
  m.def("f_reduce_backward(Tensor G, Tensor A, Tensor s, Tensor w, Tensor c, bool shared_inputs) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("g_reduce(Tensor A, Tensor s, Tensor w, Tensor c) -> Tensor");
  m.def("g_reduce_backward(Tensor G, Tensor A, Tensor s, Tensor w, Tensor c) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mplp, CPU, m) {
  m.impl("f_reduce", &f_reduce);
  m.impl("f_reduce_backward", &f_reduce_backward);
  m.impl("g_reduce", &g_reduce);
  m.impl("g_reduce_backward", &g_reduce_backward);
  m.impl("relu", &relu);
  m.impl("relu_backward", &relu_backward);
}
