// Fused multi-tensor optimizer steps for XLA:CPU (fnopt issue 15).
//
// One call updates every leaf of a dtype group: the operands are a vector of
// scalar coefficients (computed in JAX, so traced or scheduled
// hyperparameters need no recompilation) followed by n gradients and the n
// leaves of each state buffer; the results are the updates and the new state
// leaves (aliased to the old ones by the caller). Each element is read and
// written once, in the same arithmetic order as fnopt's XLA path.
//
// Built at first use by fnopt/_fused.py with
//   g++ -O3 -march=native -shared -fPIC -std=c++17 -ffp-contract=fast -I<jax.ffi.include_dir()>
// XLA:CPU compiles for the host and contracts a * b + c * d into a fused
// multiply-add; building for the host with contraction on makes the kernel
// round the same way (bit-for-bit equal on the tests' trees with g++ 12).

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

template <typename T>
struct Leaf {
  const T* in[4];
  T* out[4];
  size_t n;
};

// Adam (fnopt.scale_by_adam without amsgrad):
//   c = (b1, 1 - b1, b2, 1 - b2, 1 / bc1, rsqrt(bc2), eps, eps_root * bc2)
//   m' = b1 m + (1 - b1) g;  v' = b2 v + (1 - b2) g g
//   u = (m' / bc1) / (sqrt(v' [+ root]) rsqrt(bc2) + eps), 0 where the
//   denominator is 0 when `safe`.
template <typename T>
void AdamLeaf(const T* c, const T* g, const T* m, const T* v, T* u, T* m_out, T* v_out, size_t n, bool with_root,
              bool safe) {
  const T b1 = c[0], c1 = c[1], b2 = c[2], c2 = c[3], inv_bc1 = c[4], rs_bc2 = c[5], eps = c[6], root = c[7];
  for (size_t i = 0; i < n; ++i) {
    const T gi = g[i];
    const T mi = b1 * m[i] + c1 * gi;
    const T vi = b2 * v[i] + c2 * (gi * gi);
    const T vu = with_root ? vi + root : vi;
    const T den = std::sqrt(vu) * rs_bc2 + eps;
    const T num = mi * inv_bc1;
    T out;
    if (safe) {
      out = den > T(0) ? num / den : T(0);
    } else {
      out = num / den;
    }
    m_out[i] = mi;
    v_out[i] = vi;
    u[i] = out;
  }
}

// Heavy-ball momentum (fnopt.scale_by_momentum), c = (momentum, take):
//   b' = momentum b + take g;  u = g + momentum b' (nesterov) or b'.
template <typename T>
void MomentumLeaf(const T* c, const T* g, const T* b, T* b_out, T* u, size_t n, bool nesterov) {
  const T mom = c[0], take = c[1];
  for (size_t i = 0; i < n; ++i) {
    const T gi = g[i];
    const T bi = mom * b[i] + take * gi;
    b_out[i] = bi;
    if (nesterov) u[i] = gi + mom * bi;
  }
}

template <typename T>
ffi::Error Adam(ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t with_root, int64_t safe) {
  // args: coef, g[n], m[n], v[n]; rets: u[n], m[n], v[n]
  const size_t total = args.size();
  if (total < 1 || (total - 1) % 3 != 0 || rets.size() != total - 1) {
    return ffi::Error::InvalidArgument("fnopt adam kernel: bad operand count");
  }
  const size_t n = (total - 1) / 3;
  auto coef = args.get<ffi::AnyBuffer>(0);
  if (!coef.has_value()) return coef.error();
  const T* c = reinterpret_cast<const T*>(coef->untyped_data());
  for (size_t i = 0; i < n; ++i) {
    auto g = args.get<ffi::AnyBuffer>(1 + i);
    auto m = args.get<ffi::AnyBuffer>(1 + n + i);
    auto v = args.get<ffi::AnyBuffer>(1 + 2 * n + i);
    auto u = rets.get<ffi::AnyBuffer>(i);
    auto mo = rets.get<ffi::AnyBuffer>(n + i);
    auto vo = rets.get<ffi::AnyBuffer>(2 * n + i);
    if (!g.has_value() || !m.has_value() || !v.has_value() || !u.has_value() || !mo.has_value() || !vo.has_value()) {
      return ffi::Error::InvalidArgument("fnopt adam kernel: bad buffer");
    }
    AdamLeaf<T>(c, reinterpret_cast<const T*>(g->untyped_data()), reinterpret_cast<const T*>(m->untyped_data()),
                reinterpret_cast<const T*>(v->untyped_data()), reinterpret_cast<T*>((*u)->untyped_data()),
                reinterpret_cast<T*>((*mo)->untyped_data()), reinterpret_cast<T*>((*vo)->untyped_data()),
                g->element_count(), with_root != 0, safe != 0);
  }
  return ffi::Error::Success();
}

template <typename T>
ffi::Error Momentum(ffi::RemainingArgs args, ffi::RemainingRets rets, int64_t nesterov) {
  // args: coef, g[n], b[n]; rets: b[n] (+ u[n] with nesterov)
  const size_t total = args.size();
  if (total < 1 || (total - 1) % 2 != 0) {
    return ffi::Error::InvalidArgument("fnopt momentum kernel: bad operand count");
  }
  const size_t n = (total - 1) / 2;
  if (rets.size() != (nesterov ? 2 * n : n)) {
    return ffi::Error::InvalidArgument("fnopt momentum kernel: bad result count");
  }
  auto coef = args.get<ffi::AnyBuffer>(0);
  if (!coef.has_value()) return coef.error();
  const T* c = reinterpret_cast<const T*>(coef->untyped_data());
  for (size_t i = 0; i < n; ++i) {
    auto g = args.get<ffi::AnyBuffer>(1 + i);
    auto b = args.get<ffi::AnyBuffer>(1 + n + i);
    auto bo = rets.get<ffi::AnyBuffer>(i);
    if (!g.has_value() || !b.has_value() || !bo.has_value()) {
      return ffi::Error::InvalidArgument("fnopt momentum kernel: bad buffer");
    }
    T* u = nullptr;
    if (nesterov) {
      auto uo = rets.get<ffi::AnyBuffer>(n + i);
      if (!uo.has_value()) return ffi::Error::InvalidArgument("fnopt momentum kernel: bad buffer");
      u = reinterpret_cast<T*>((*uo)->untyped_data());
    }
    MomentumLeaf<T>(c, reinterpret_cast<const T*>(g->untyped_data()), reinterpret_cast<const T*>(b->untyped_data()),
                    reinterpret_cast<T*>((*bo)->untyped_data()), u, g->element_count(), nesterov != 0);
  }
  return ffi::Error::Success();
}

}  // namespace

#define FNOPT_ADAM(NAME, T)                                                        \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(NAME, Adam<T>,                                     \
                                ffi::Ffi::Bind()                                   \
                                    .RemainingArgs()                               \
                                    .RemainingRets()                               \
                                    .Attr<int64_t>("with_root")                    \
                                    .Attr<int64_t>("safe"));

#define FNOPT_MOMENTUM(NAME, T)                                                    \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(NAME, Momentum<T>,                                 \
                                ffi::Ffi::Bind().RemainingArgs().RemainingRets().Attr<int64_t>("nesterov"));

FNOPT_ADAM(fnopt_adam_f32, float)
FNOPT_ADAM(fnopt_adam_f64, double)
FNOPT_MOMENTUM(fnopt_momentum_f32, float)
FNOPT_MOMENTUM(fnopt_momentum_f64, double)
