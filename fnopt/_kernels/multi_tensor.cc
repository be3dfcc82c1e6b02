// Fused multi-tensor optimizer state updates for XLA:CPU (fnopt issue 15).
//
// One call updates every leaf of a dtype group: the operands are a vector of
// scalar coefficients (computed in JAX, so traced or scheduled
// hyperparameters need no recompilation) followed by n gradients and the n
// leaves of each state buffer; the results are the new state leaves (aliased
// to the old ones by the caller). Each element is read and written once, in
// the same arithmetic order as fnopt's XLA path.
//
// Built at first use by fnopt/_fused.py with
//   g++ -O3 -march=native -fno-math-errno -shared -fPIC -std=c++17 -ffp-contract=fast -I<jax.ffi.include_dir()>
// XLA:CPU compiles for the host and contracts a * b + c * d into a fused
// multiply-add; building for the host with contraction on makes the kernel
// round the same way (bit-for-bit equal on the tests' trees with g++ 12).
// -fno-math-errno lets sqrt vectorize (it changes no result).

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Only the state is written, in place: XLA hands the kernel the aliased
// operand buffer as the result buffer (input_output_aliases). The update
// direction is left to XLA, which fuses it with the learning rate and
// `apply_updates` into the loop that writes the params: no update buffer is
// materialized (a fresh temporary of the params' size would cost a page fault
// per 4 KiB every step). Every loop reads and writes element i only, so
// `ivdep` (no loop-carried dependence) holds and the loops vectorize.

// Adam's moments (fnopt.scale_by_adam without amsgrad), c = (b1, 1 - b1, b2, 1 - b2):
//   m' = b1 m + (1 - b1) g;  v' = b2 v + (1 - b2) g g
template <typename T>
void AdamLeaf(const T* c, const T* g, T* m, T* v, size_t n) {
  const T b1 = c[0], c1 = c[1], b2 = c[2], c2 = c[3];
#pragma GCC ivdep
  for (size_t i = 0; i < n; ++i) {
    const T gi = g[i];
    m[i] = b1 * m[i] + c1 * gi;
    v[i] = b2 * v[i] + c2 * (gi * gi);
  }
}

// Heavy-ball momentum's buffer (fnopt.scale_by_momentum), c = (momentum, take):
//   b' = momentum b + take g.
template <typename T>
void MomentumLeaf(const T* c, const T* g, T* b, size_t n) {
  const T mom = c[0], take = c[1];
#pragma GCC ivdep
  for (size_t i = 0; i < n; ++i) b[i] = mom * b[i] + take * g[i];
}

// The result buffer of an aliased state operand: the operand's own buffer
// (XLA guarantees it); copied over first should it ever differ.
template <typename T>
T* InPlace(const ffi::AnyBuffer& in, ffi::AnyBuffer out) {
  T* src = reinterpret_cast<T*>(in.untyped_data());
  T* dst = reinterpret_cast<T*>(out.untyped_data());
  if (src != dst) std::copy(src, src + in.element_count(), dst);
  return dst;
}

// ------------------------------------------------------------- scheduling
//
// Every leaf is cut into jobs of at most kJob elements, and consecutive jobs
// are grouped into blocks of about kBlock elements. The calling thread and up
// to (pool threads - 1) helpers claim blocks from an atomic counter until none
// is left; the caller then waits for the blocks the helpers claimed. A helper
// that starts late finds nothing to claim and only touches the shared state it
// co-owns, so nothing waits on a task the pool has not started.

constexpr size_t kJob = size_t{1} << 16;
constexpr size_t kBlock = size_t{1} << 17;
constexpr size_t kParallelMin = size_t{1} << 18;  // below: one thread

struct Job {
  size_t leaf, begin, end;
};

template <typename Body>
struct Shared {
  Body body;
  std::vector<Job> jobs;
  std::vector<size_t> blocks;  // job index where each block starts, plus jobs.size()
  std::atomic<size_t> next{0};
  std::atomic<size_t> done{0};

  explicit Shared(Body b) : body(std::move(b)) {}

  void Work() {
    const size_t n_blocks = blocks.size() - 1;
    for (size_t b = next.fetch_add(1); b < n_blocks; b = next.fetch_add(1)) {
      for (size_t j = blocks[b]; j < blocks[b + 1]; ++j) body(jobs[j].leaf, jobs[j].begin, jobs[j].end);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

// body(leaf, begin, end) updates elements [begin, end) of leaf `leaf`.
template <typename Body>
void Run(ffi::ThreadPool& pool, const std::vector<size_t>& sizes, Body body) {
  size_t total = 0;
  for (size_t s : sizes) total += s;
  int64_t threads = total >= kParallelMin ? pool.num_threads() : 0;
  if (const char* cap = std::getenv("FNOPT_FUSED_THREADS")) threads = std::min<int64_t>(threads, std::atoll(cap));
  if (threads <= 1) {
    for (size_t i = 0; i < sizes.size(); ++i) body(i, 0, sizes[i]);
    return;
  }
  auto shared = std::make_shared<Shared<Body>>(std::move(body));
  size_t in_block = 0;
  shared->blocks.push_back(0);
  for (size_t i = 0; i < sizes.size(); ++i) {
    for (size_t b = 0; b < sizes[i]; b += kJob) {
      const size_t e = std::min(sizes[i], b + kJob);
      shared->jobs.push_back({i, b, e});
      in_block += e - b;
      if (in_block >= kBlock) {
        shared->blocks.push_back(shared->jobs.size());
        in_block = 0;
      }
    }
  }
  if (shared->blocks.back() != shared->jobs.size()) shared->blocks.push_back(shared->jobs.size());
  const size_t n_blocks = shared->blocks.size() - 1;
  const int64_t helpers = std::min<int64_t>(threads - 1, static_cast<int64_t>(n_blocks) - 1);
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([shared] { shared->Work(); });
  shared->Work();
  while (shared->done.load(std::memory_order_acquire) < n_blocks) std::this_thread::yield();
}

template <typename T>
T* Data(const ffi::AnyBuffer& b) {
  return reinterpret_cast<T*>(b.untyped_data());
}

template <typename T>
ffi::Error Adam(ffi::ThreadPool pool, ffi::RemainingArgs args, ffi::RemainingRets rets) {
  // args: coef, g[n], m[n], v[n]; rets: m[n], v[n] (aliased to the operands)
  const size_t total = args.size();
  if (total < 1 || (total - 1) % 3 != 0 || rets.size() != 2 * ((total - 1) / 3)) {
    return ffi::Error::InvalidArgument("fnopt adam kernel: bad operand count");
  }
  const size_t n = (total - 1) / 3;
  auto coef = args.get<ffi::AnyBuffer>(0);
  if (!coef.has_value()) return coef.error();
  std::array<T, 4> k;
  std::copy(Data<const T>(*coef), Data<const T>(*coef) + 4, k.begin());
  std::vector<std::array<T*, 3>> ptr(n);
  std::vector<size_t> sizes(n);
  for (size_t i = 0; i < n; ++i) {
    auto g = args.get<ffi::AnyBuffer>(1 + i);
    auto m = args.get<ffi::AnyBuffer>(1 + n + i);
    auto v = args.get<ffi::AnyBuffer>(1 + 2 * n + i);
    auto mo = rets.get<ffi::AnyBuffer>(i);
    auto vo = rets.get<ffi::AnyBuffer>(n + i);
    if (!g.has_value() || !m.has_value() || !v.has_value() || !mo.has_value() || !vo.has_value()) {
      return ffi::Error::InvalidArgument("fnopt adam kernel: bad buffer");
    }
    ptr[i] = {Data<T>(*g), InPlace<T>(*m, **mo), InPlace<T>(*v, **vo)};
    sizes[i] = g->element_count();
  }
  Run(pool, sizes, [ptr = std::move(ptr), k](size_t i, size_t b, size_t e) {
    const auto& p = ptr[i];
    AdamLeaf<T>(k.data(), p[0] + b, p[1] + b, p[2] + b, e - b);
  });
  return ffi::Error::Success();
}

template <typename T>
ffi::Error Momentum(ffi::ThreadPool pool, ffi::RemainingArgs args, ffi::RemainingRets rets) {
  // args: coef, g[n], b[n]; rets: b[n] (aliased to the operands)
  const size_t total = args.size();
  if (total < 1 || (total - 1) % 2 != 0 || rets.size() != (total - 1) / 2) {
    return ffi::Error::InvalidArgument("fnopt momentum kernel: bad operand count");
  }
  const size_t n = (total - 1) / 2;
  auto coef = args.get<ffi::AnyBuffer>(0);
  if (!coef.has_value()) return coef.error();
  std::array<T, 2> k{Data<const T>(*coef)[0], Data<const T>(*coef)[1]};
  std::vector<std::array<T*, 2>> ptr(n);
  std::vector<size_t> sizes(n);
  for (size_t i = 0; i < n; ++i) {
    auto g = args.get<ffi::AnyBuffer>(1 + i);
    auto b = args.get<ffi::AnyBuffer>(1 + n + i);
    auto bo = rets.get<ffi::AnyBuffer>(i);
    if (!g.has_value() || !b.has_value() || !bo.has_value()) {
      return ffi::Error::InvalidArgument("fnopt momentum kernel: bad buffer");
    }
    ptr[i] = {Data<T>(*g), InPlace<T>(*b, **bo)};
    sizes[i] = g->element_count();
  }
  Run(pool, sizes, [ptr = std::move(ptr), k](size_t i, size_t b, size_t e) {
    const auto& p = ptr[i];
    MomentumLeaf<T>(k.data(), p[0] + b, p[1] + b, e - b);
  });
  return ffi::Error::Success();
}


// ------------------------------------------------------------ whole steps
//
// fnopt.apply_gradients on adam / adamw / sgd(momentum): the params are
// updated in place too, so a step over n leaves is one call and no XLA loop.
// The arithmetic follows the alias's chain stage by stage (fnopt._step):
//   g1 = (flip ? -g : g);  g1 = coupled ? g1 + wdc p : g1
//   adam:     m' = b1 m + (1-b1) g1;  v' = b2 v + (1-b2) g1 g1
//             d = (m' ib1) / (sqrt(v') rb2 + eps);  d = decoupled ? d + wdd p : d
//   momentum: b' = mom b + take g1;   d = nesterov ? g1 + mom b' : b'
//   p' = p + d (-lr)

// A whole-step leaf kernel: q = (g, params, state buffers...), elements [b, e).
template <typename T>
using StepLeafFn = void (*)(const T* c, T* const* q, size_t b, size_t e);

// The gradient after an alias's first stages: maximize's sign flip, then
// coupled (L2) weight decay.
template <typename T, bool kFlip, bool kCoupled>
inline T StageGradient(T g, T p, T wdc) {
  if (kFlip) g = -g;
  if (kCoupled) g = g + wdc * p;
  return g;
}

// c = (b1, 1-b1, b2, 1-b2, 1/bc1, 1/sqrt(bc2), eps, -lr, wdc, wdd, flip, coupled, decoupled)
template <typename T>
struct AdamStepLeaf {
  static constexpr size_t kCoef = 13, kBuffers = 3, kFlags = 10;
  template <bool kFlip, bool kCoupled, bool kDecoupled>
  static void Run(const T* c, T* const* q, size_t b, size_t e) {
    const T b1 = c[0], c1 = c[1], b2 = c[2], c2 = c[3], ib1 = c[4], rb2 = c[5], eps = c[6], nlr = c[7];
    const T wdc = c[8], wdd = c[9];
    const T* g = q[0];
    T *p = q[1], *m = q[2], *v = q[3];
#pragma GCC ivdep
    for (size_t i = b; i < e; ++i) {
      const T pi = p[i];
      const T gi = StageGradient<T, kFlip, kCoupled>(g[i], pi, wdc);
      const T mi = b1 * m[i] + c1 * gi;
      const T vi = b2 * v[i] + c2 * (gi * gi);
      m[i] = mi;
      v[i] = vi;
      T d = (mi * ib1) / (std::sqrt(vi) * rb2 + eps);
      if (kDecoupled) d = d + wdd * pi;
      p[i] = pi + d * nlr;
    }
  }
};

// c = (mom, take, -lr, wdc, flip, coupled, nesterov)
template <typename T>
struct MomentumStepLeaf {
  static constexpr size_t kCoef = 7, kBuffers = 2, kFlags = 4;
  template <bool kFlip, bool kCoupled, bool kNesterov>
  static void Run(const T* c, T* const* q, size_t b, size_t e) {
    const T mom = c[0], take = c[1], nlr = c[2], wdc = c[3];
    const T* g = q[0];
    T *p = q[1], *buf = q[2];
#pragma GCC ivdep
    for (size_t i = b; i < e; ++i) {
      const T pi = p[i];
      const T gi = StageGradient<T, kFlip, kCoupled>(g[i], pi, wdc);
      const T bi = mom * buf[i] + take * gi;
      buf[i] = bi;
      const T d = kNesterov ? gi + mom * bi : bi;
      p[i] = pi + d * nlr;
    }
  }
};

// Leaf's variant for its three flags c[kFlags..kFlags+2] (nonzero = on): each
// is a compile-time constant inside the loop, so a stage left out costs
// nothing (and never computes 0 * p, which is NaN for an infinite p).
template <typename T, typename Leaf>
StepLeafFn<T> Pick(const T* c) {
  static constexpr StepLeafFn<T> kTable[8] = {
      &Leaf::template Run<false, false, false>, &Leaf::template Run<false, false, true>,
      &Leaf::template Run<false, true, false>,  &Leaf::template Run<false, true, true>,
      &Leaf::template Run<true, false, false>,  &Leaf::template Run<true, false, true>,
      &Leaf::template Run<true, true, false>,   &Leaf::template Run<true, true, true>};
  const size_t k = Leaf::kFlags;
  return kTable[(c[k] != 0) * 4 + (c[k + 1] != 0) * 2 + (c[k + 2] != 0)];
}

// args: coef, g[n], then kBuffers buffers of n leaves each (params first),
// all but coef and g updated in place; rets: the kBuffers * n buffers, aliased.
// Packed (fnopt.packed): the state buffers are one flat array each, the
// chunk's leaves lying back to back from element `offset`; args: coef, g[n],
// params[n], then the kBuffers - 1 flat state arrays; rets: params[n] and the
// flat arrays, aliased.
template <typename T, typename Leaf, bool kPacked>
ffi::Error StepImpl(ffi::ThreadPool pool, int64_t offset, ffi::RemainingArgs args, ffi::RemainingRets rets) {
  constexpr size_t kCoef = Leaf::kCoef, kBuffers = Leaf::kBuffers;
  const size_t total = args.size();
  // leaves: n gradients, n params, and n leaves (or one flat array) per state buffer
  const size_t per_leaf = kPacked ? 2 : 1 + kBuffers, fixed = kPacked ? 1 + (kBuffers - 1) : 1;
  if (total < fixed || (total - fixed) % per_leaf != 0) {
    return ffi::Error::InvalidArgument("fnopt whole-step kernel: bad operand count");
  }
  const size_t n = (total - fixed) / per_leaf;
  if (rets.size() != (kPacked ? n + kBuffers - 1 : kBuffers * n) || offset < 0) {
    return ffi::Error::InvalidArgument("fnopt whole-step kernel: bad result count");
  }
  auto coef = args.get<ffi::AnyBuffer>(0);
  if (!coef.has_value()) return coef.error();
  if (coef->element_count() != kCoef) return ffi::Error::InvalidArgument("fnopt whole-step kernel: bad coefficients");
  std::array<T, kCoef> k;
  std::copy(Data<const T>(*coef), Data<const T>(*coef) + kCoef, k.begin());
  const StepLeafFn<T> fn = Pick<T, Leaf>(k.data());
  std::array<T*, kBuffers> flat{};
  size_t flat_size = 0;  // the smallest flat array's length
  if (kPacked) {
    for (size_t j = 1; j < kBuffers; ++j) {
      auto in = args.get<ffi::AnyBuffer>(1 + 2 * n + (j - 1));
      auto out = rets.get<ffi::AnyBuffer>(n + (j - 1));
      if (!in.has_value() || !out.has_value()) return ffi::Error::InvalidArgument("fnopt whole-step kernel: bad buffer");
      flat[j] = InPlace<T>(*in, **out) + offset;
      flat_size = j == 1 ? in->element_count() : std::min(flat_size, in->element_count());
    }
  }
  std::vector<std::array<T*, 1 + kBuffers>> ptr(n);
  std::vector<size_t> sizes(n);
  size_t at = 0;  // packed: the leaf's first element in the flat arrays, from offset
  for (size_t i = 0; i < n; ++i) {
    auto g = args.get<ffi::AnyBuffer>(1 + i);
    if (!g.has_value()) return ffi::Error::InvalidArgument("fnopt whole-step kernel: bad buffer");
    ptr[i][0] = Data<T>(*g);
    sizes[i] = g->element_count();
    for (size_t j = 0; j < kBuffers; ++j) {
      if (kPacked && j > 0) {
        ptr[i][1 + j] = flat[j] + at;
        continue;
      }
      auto in = args.get<ffi::AnyBuffer>(1 + (1 + j) * n + i);
      auto out = rets.get<ffi::AnyBuffer>(j * n + i);
      if (!in.has_value() || !out.has_value()) return ffi::Error::InvalidArgument("fnopt whole-step kernel: bad buffer");
      if (in->element_count() != sizes[i]) return ffi::Error::InvalidArgument("fnopt whole-step kernel: bad leaf size");
      ptr[i][1 + j] = InPlace<T>(*in, **out);
    }
    at += sizes[i];
  }
  if (kPacked && static_cast<size_t>(offset) + at > flat_size) {
    return ffi::Error::InvalidArgument("fnopt whole-step kernel: leaves beyond the packed state");
  }
  Run(pool, sizes, [ptr = std::move(ptr), k, fn](size_t i, size_t b, size_t e) { fn(k.data(), ptr[i].data(), b, e); });
  return ffi::Error::Success();
}

template <typename T, typename Leaf>
ffi::Error Step(ffi::ThreadPool pool, ffi::RemainingArgs args, ffi::RemainingRets rets) {
  return StepImpl<T, Leaf, false>(pool, 0, args, rets);
}

template <typename T, typename Leaf>
ffi::Error PackedStep(ffi::ThreadPool pool, int64_t offset, ffi::RemainingArgs args, ffi::RemainingRets rets) {
  return StepImpl<T, Leaf, true>(pool, offset, args, rets);
}

// The bandwidth probe of benchmarks/step_time.py: x = -x in place, split
// between threads like the optimizer kernels (XLA:CPU runs a plain
// elementwise loop on one thread, which reads about half the bandwidth of
// two cores on the 2-core machine).
template <typename T>
ffi::Error Negate(ffi::ThreadPool pool, ffi::RemainingArgs args, ffi::RemainingRets rets) {
  if (args.size() != 1 || rets.size() != 1) return ffi::Error::InvalidArgument("fnopt negate: bad operand count");
  auto x = args.get<ffi::AnyBuffer>(0);
  auto out = rets.get<ffi::AnyBuffer>(0);
  if (!x.has_value() || !out.has_value()) return ffi::Error::InvalidArgument("fnopt negate: bad buffer");
  T* src = Data<T>(*x);
  T* dst = reinterpret_cast<T*>((*out)->untyped_data());
  Run(pool, {x->element_count()}, [src, dst](size_t, size_t b, size_t e) {
#pragma GCC ivdep
    for (size_t i = b; i < e; ++i) dst[i] = -src[i];
  });
  return ffi::Error::Success();
}

}  // namespace

#define FNOPT_HANDLER(NAME, FN)                                                    \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(NAME, FN,                                          \
                                ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().RemainingArgs().RemainingRets());

FNOPT_HANDLER(fnopt_adam_f32, Adam<float>)
FNOPT_HANDLER(fnopt_adam_f64, Adam<double>)
FNOPT_HANDLER(fnopt_momentum_f32, Momentum<float>)
FNOPT_HANDLER(fnopt_momentum_f64, Momentum<double>)
FNOPT_HANDLER(fnopt_adam_step_f32, (Step<float, AdamStepLeaf<float>>))
FNOPT_HANDLER(fnopt_adam_step_f64, (Step<double, AdamStepLeaf<double>>))
FNOPT_HANDLER(fnopt_momentum_step_f32, (Step<float, MomentumStepLeaf<float>>))
FNOPT_HANDLER(fnopt_momentum_step_f64, (Step<double, MomentumStepLeaf<double>>))
FNOPT_HANDLER(fnopt_negate_f32, Negate<float>)

#define FNOPT_PACKED_HANDLER(NAME, FN)                                                                    \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(                                                                         \
      NAME, FN,                                                                                          \
      ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Attr<int64_t>("offset").RemainingArgs().RemainingRets());

FNOPT_PACKED_HANDLER(fnopt_adam_step_packed_f32, (PackedStep<float, AdamStepLeaf<float>>))
FNOPT_PACKED_HANDLER(fnopt_adam_step_packed_f64, (PackedStep<double, AdamStepLeaf<double>>))
FNOPT_PACKED_HANDLER(fnopt_momentum_step_packed_f32, (PackedStep<float, MomentumStepLeaf<float>>))
FNOPT_PACKED_HANDLER(fnopt_momentum_step_packed_f64, (PackedStep<double, MomentumStepLeaf<double>>))
