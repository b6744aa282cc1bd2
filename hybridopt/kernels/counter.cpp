// The CPU kernel of hybridopt's counter-based direction generator (hybridopt/counter.py holds the
// definition and a torch reference that gives the same bits on any device).
//
// Element e of a direction with 64-bit key K is a pure function of (K, e):
//   word(c)      = splitmix64(K + c·γ)                  (γ = 0x9E3779B97F4A7C15, mod 2^64)
//   Gaussian:    elements 2c, 2c+1 = Box–Muller of word(c)'s top and bottom 24 bits
//   Rademacher:  element e = −1 iff bit e mod 64 of word(⌊e/64⌋) is set
// Every float operation below is one IEEE float32 operation (built with -ffp-contract=off and
// no fast-math: no FMA, no reassociation), in the order the torch reference performs it, so the
// two agree bit for bit.  Each law is a one-thread run over an element range that hands every
// value to a sink inlined into its loop (a fused operation never stores u); the loops are plain
// enough for the compiler to vectorise (branch-free: a selection is a bit mask, so gcc
// if-converts it; the counter's c·γ is an induction variable, not a 64-bit multiply per word).
// `blocks` spreads aligned blocks of a call over torch's own OpenMP thread pool (libgomp.so.1 is
// the one torch already loaded).
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ULL;
constexpr int64_t kParallelMin = 1 << 15;  // elements; below this a call stays on one thread

// splitmix64's output function: word(c) = mix(key + (c+1)·γ)
inline uint64_t mix(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

inline uint64_t word(uint64_t key, uint64_t c) { return mix(key + (c + 1) * kGamma); }

inline float as_float(uint32_t b) { float f; std::memcpy(&f, &b, 4); return f; }
inline uint32_t as_bits(float f) { uint32_t b; std::memcpy(&b, &f, 4); return b; }

// Box–Muller: r² = −2 ln u1, u1 = (a+1)·2^-24 ∈ (0, 1]; θ = 2π·b·2^-24 = octant·π/4 ± t.
inline void gauss2(uint64_t w, float& z0, float& z1) {
  const uint32_t a = (uint32_t)(w >> 40), b = (uint32_t)(w & 0xFFFFFFu);
  // (a+1) = m·2^(e+24), m ∈ [√2/2, √2); ln m = 2 atanh(s), s = (m−1)/(m+1), |s| ≤ 3 − 2√2:
  // −2 ln u1 = e·(−2 ln 2) + s·Q(s²), Q a minimax fit of −4 atanh(s)/s (rel. error 8e-10)
  const uint32_t bits = as_bits((float)(a + 1u)), mant = bits & 0x7FFFFFu;
  const uint32_t big = mant > 0x3504F3u ? 1u : 0u;   // 1.mant > √2 (√2 = 1.0x3504F3): halve m
  const float m = as_float(mant | (big ? 0x3F000000u : 0x3F800000u));
  const int32_t e = (int32_t)(bits >> 23) - 151 + (int32_t)big;
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  float q = -0x1.31e0dep-1f;
  q = q * s2 - 0x1.995ed0p-1f;
  q = q * s2 - 0x1.55557ap+0f;
  q = q * s2 - 4.0f;
  const float r = std::sqrt((float)e * -0x1.62e430p+0f + s * q);
  // octant o = top 3 bits of b; t ∈ [0, π/4] from the other 21 (mirrored in odd octants:
  // θ = o·π/4 + t, or (o+1)·π/4 − t); sin t, cos t by minimax polynomials (rel. error 4e-9, 4e-8)
  const uint32_t o = b >> 21, i = b & 0x1FFFFFu;
  const uint32_t odd = 0u - (o & 1u);                              // all ones in odd octants
  const float t = (float)((i ^ odd) + (odd & 0x200001u)) * 0x1.921fb6p-22f;  // odd: 2^21 − i
  const float t2 = t * t;
  float sn = -0x1.9943e2p-13f;
  sn = sn * t2 + 0x1.11073ap-7f;
  sn = sn * t2 - 0x1.555546p-3f;
  sn = t + (t * t2) * sn;
  float cs = -0x1.644d62p-10f;
  cs = cs * t2 + 0x1.553e80p-5f;
  cs = cs * t2 - 0x1.ffffb2p-2f;
  cs = 1.0f + t2 * cs;
  // (cos θ, sin θ) by octant 0..7: (c,s) (s,c) (−s,c) (−c,s) (−c,−s) (−s,−c) (s,−c) (c,−s)
  const uint32_t swap = 0u - (((o + 1u) >> 1) & 1u), sb = as_bits(sn), cb = as_bits(cs);
  const float x = as_float(((sb & swap) | (cb & ~swap)) ^ ((((o + 2u) >> 2) & 1u) << 31));
  const float y = as_float(((cb & swap) | (sb & ~swap)) ^ ((o >> 2) << 31));
  z0 = r * x;
  z1 = r * y;
}

constexpr int64_t kBlock = 2048;  // elements per work item: whole Rademacher words (64), whole pairs

// sink(i, u[e0 + i]) for i < m, the Gaussian law (one thread; the sink is inlined into the
// vectorised loop, so a fused operation never stores u)
template <class Sink>
inline void gaussian_run(uint64_t key, int64_t e0, int64_t m, Sink sink) {
  float z0, z1;
  int64_t i = 0;
  if (e0 & 1) { gauss2(word(key, (uint64_t)(e0 >> 1)), z0, z1); sink(0, z1); i = 1; }  // second of a pair
  const int64_t pairs = (m - i) >> 1;
  uint64_t x = key + (uint64_t)(((e0 + i) >> 1) + 1) * kGamma;   // key + (c+1)·γ for the first pair c
#pragma omp simd linear(x : kGamma)
  for (int64_t k = 0; k < pairs; ++k) {
    float a, b;
    gauss2(mix(x), a, b);
    x += kGamma;
    sink(i + 2 * k, a);
    sink(i + 2 * k + 1, b);
  }
  if (i + 2 * pairs < m) { gauss2(word(key, (uint64_t)((e0 + m - 1) >> 1)), z0, z1); sink(m - 1, z0); }
}

// the 256 sign patterns of a byte, least significant bit first
struct SignTable {
  float v[256][8];
  SignTable() { for (int i = 0; i < 256; ++i) for (int k = 0; k < 8; ++k) v[i][k] = ((i >> k) & 1) ? -1.0f : 1.0f; }
};
const SignTable kSigns;

inline float sign_at(uint64_t key, int64_t e) {
  return ((word(key, (uint64_t)(e >> 6)) >> (e & 63)) & 1u) ? -1.0f : 1.0f;
}

// sink(i, u[e0 + i]) for i < m, the Rademacher law (one thread)
template <class Sink>
inline void rademacher_run(uint64_t key, int64_t e0, int64_t m, Sink sink) {
  int64_t i = 0;
  for (; i < m && ((e0 + i) & 63); ++i) sink(i, sign_at(key, e0 + i));      // head: the rest of a word
  for (; i + 64 <= m; i += 64) {
    const uint64_t x = word(key, (uint64_t)((e0 + i) >> 6));
    for (int k = 0; k < 8; ++k) {
      const float* t = kSigns.v[(x >> (8 * k)) & 255u];
#pragma omp simd
      for (int b = 0; b < 8; ++b) sink(i + 8 * k + b, t[b]);
    }
  }
  for (; i < m; ++i) sink(i, sign_at(key, e0 + i));                         // tail: the start of a word
}

template <class Sink>
inline void run(int law, uint64_t key, int64_t e0, int64_t m, Sink sink) {
  if (law == 0) gaussian_run(key, e0, m, sink);
  else rademacher_run(key, e0, m, sink);
}

// op(o, m, e0) for the elements [e0, e0 + m) of [start, start + n) (o = e0 − start), in blocks
// aligned to multiples of kBlock, spread over the threads; 1 for an unknown law
template <class Op>
int blocks(int law, int64_t start, int64_t n, Op op) {
  if (law != 0 && law != 1) return 1;
  if (n <= 0) return 0;
  const int64_t end = start + n, b0 = start / kBlock, b1 = (end + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t lo = start > b * kBlock ? start : b * kBlock;
    const int64_t hi = end < (b + 1) * kBlock ? end : (b + 1) * kBlock;
    op(lo - start, hi - lo, lo);
  }
  return 0;
}

}  // namespace

extern "C" {

// out[o] = factor·u[start + o], o < n
int ho_fill(int law, uint64_t key, int64_t start, int64_t n, float factor, float* out) {
  return blocks(law, start, n, [=](int64_t o, int64_t m, int64_t e0) {
    float* y = out + o;
    run(law, key, e0, m, [=](int64_t i, float u) { y[i] = factor * u; });
  });
}

// su = factor·u; plus[o] = w[o] + su, minus[o] = w[o] − su (a paired probe's two points, one pass)
int ho_pair(int law, uint64_t key, int64_t start, int64_t n, float factor, const float* w,
            float* plus, float* minus) {
  return blocks(law, start, n, [=](int64_t o, int64_t m, int64_t e0) {
    const float* x = w + o;
    float *yp = plus + o, *ym = minus + o;
    run(law, key, e0, m, [=](int64_t i, float u) {
      const float su = factor * u;
      yp[i] = x[i] + su;
      ym[i] = x[i] - su;
    });
  });
}

// p[o] = p[o] + factor·u[start + o], in place (an SGD update of one direction)
int ho_axpy(int law, uint64_t key, int64_t start, int64_t n, float factor, float* p) {
  return blocks(law, start, n, [=](int64_t o, int64_t m, int64_t e0) {
    float* x = p + o;
    run(law, key, e0, m, [=](int64_t i, float u) { x[i] = x[i] + factor * u; });
  });
}

int ho_version() { return 3; }
}
