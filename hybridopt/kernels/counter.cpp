// The CPU kernel of hybridopt's counter-based direction generator (hybridopt/counter.py holds the
// definition and a torch reference that gives the same bits on any device).
//
// Element e of a direction with 64-bit key K is a pure function of (K, e):
//   word(c)      = splitmix64(K + c·γ)                  (γ = 0x9E3779B97F4A7C15, mod 2^64)
//   Gaussian:    elements 2c, 2c+1 = Box–Muller of word(c)'s top and bottom 24 bits
//   Rademacher:  element e = −1 iff bit e mod 64 of word(⌊e/64⌋) is set
// Every float operation below is one IEEE float32 operation (built with -ffp-contract=off and
// no fast-math: no FMA, no reassociation), in the order the torch reference performs it, so the
// two agree bit for bit.  Loops are plain enough for the compiler to vectorise; OpenMP spreads
// them over torch's own thread pool (libgomp.so.1 is the one torch already loaded).
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ULL;
constexpr int64_t kParallelMin = 1 << 15;  // elements; below this a call stays on one thread

inline uint64_t word(uint64_t key, uint64_t c) {
  uint64_t x = key + (c + 1) * kGamma;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

inline float as_float(uint32_t b) { float f; std::memcpy(&f, &b, 4); return f; }
inline uint32_t as_bits(float f) { uint32_t b; std::memcpy(&b, &f, 4); return b; }

// Box–Muller: r = sqrt(−2 ln u1), u1 = (a+1)·2^-24 ∈ (0, 1]; θ = 2π·b·2^-24 = quadrant·π/2 + φ.
inline void gauss2(uint64_t w, float& z0, float& z1) {
  const uint32_t a = (uint32_t)(w >> 40), b = (uint32_t)(w & 0xFFFFFFu);
  // ln u1 = e·ln2 + ln m, (a+1) = m·2^(e+24), m ∈ [√2/2, √2): ln m = 2s(1 + s²/3 + … + s¹⁰/11)
  const uint32_t bits = as_bits((float)(a + 1u));
  const bool big = as_float((bits & 0x7FFFFFu) | 0x3F800000u) > 0x1.6a09e6p+0f;
  const float m = as_float((bits & 0x7FFFFFu) | (big ? 0x3F000000u : 0x3F800000u));
  const int32_t e = (int32_t)(bits >> 23) - 151 + (big ? 1 : 0);
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  float p = 0x1.745d18p-4f;
  p = p * s2 + 0x1.c71c72p-4f;
  p = p * s2 + 0x1.24924ap-3f;
  p = p * s2 + 0x1.99999ap-3f;
  p = p * s2 + 0x1.555556p-2f;
  p = p * s2 + 1.0f;
  const float lg = (float)e * 0x1.62e430p-1f + (s + s) * p;
  const float r = std::sqrt(lg * -2.0f);
  // φ = (b mod 2^22)·(π/2)·2^-22 ∈ [0, π/2): Taylor polynomials of sin and cos
  const uint32_t q = b >> 22;
  const float t = (float)(b & 0x3FFFFFu) * 0x1.921fb6p-22f;
  const float t2 = t * t;
  float sn = -0x1.ae7f3ep-41f;
  sn = sn * t2 + 0x1.612462p-33f;
  sn = sn * t2 - 0x1.ae6456p-26f;
  sn = sn * t2 + 0x1.71de3ap-19f;
  sn = sn * t2 - 0x1.a01a02p-13f;
  sn = sn * t2 + 0x1.111112p-7f;
  sn = sn * t2 - 0x1.555556p-3f;
  sn = t + (t * t2) * sn;
  float cs = 0x1.ae7f3ep-45f;
  cs = cs * t2 - 0x1.93974ap-37f;
  cs = cs * t2 + 0x1.1eed8ep-29f;
  cs = cs * t2 - 0x1.27e4fcp-22f;
  cs = cs * t2 + 0x1.a01a02p-16f;
  cs = cs * t2 - 0x1.6c16c2p-10f;
  cs = cs * t2 + 0x1.555556p-5f;
  cs = cs * t2 - 0.5f;
  cs = 1.0f + t2 * cs;
  // rotate by the quadrant: (cos θ, sin θ) = (c, s), (−s, c), (−c, −s), (s, −c)
  float c0 = (q & 1u) ? -sn : cs, s0 = (q & 1u) ? cs : sn;
  c0 = (q & 2u) ? -c0 : c0;
  s0 = (q & 2u) ? -s0 : s0;
  z0 = r * c0;
  z1 = r * s0;
}

constexpr int64_t kBlock = 256;  // pairs per block: generated into a local buffer, then sunk

// sink(o, u): element start+o of the direction is u
template <class Sink>
void gaussian(uint64_t key, int64_t start, int64_t n, Sink sink) {
  if (n <= 0) return;
  const int64_t end = start + n;
  int64_t e = start;
  float z0, z1;
  if (e & 1) { gauss2(word(key, (uint64_t)(e >> 1)), z0, z1); sink(0, z1); ++e; }
  const int64_t c0 = e >> 1, c1 = end >> 1, base = e - start;
  const int64_t blocks = (c1 - c0 + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t b0 = c0 + blk * kBlock, m = (c1 - b0) < kBlock ? (c1 - b0) : kBlock;
    float za[kBlock], zb[kBlock], buf[2 * kBlock];
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) gauss2(word(key, (uint64_t)(b0 + i)), za[i], zb[i]);
    for (int64_t i = 0; i < m; ++i) { buf[2 * i] = za[i]; buf[2 * i + 1] = zb[i]; }
    const int64_t o = base + 2 * (b0 - c0);
#pragma omp simd
    for (int64_t i = 0; i < 2 * m; ++i) sink(o + i, buf[i]);
  }
  if ((end & 1) && end - 1 >= e) { gauss2(word(key, (uint64_t)(end >> 1)), z0, z1); sink(end - 1 - start, z0); }
}

// the 256 sign patterns of a byte, least significant bit first
struct SignTable {
  float v[256][8];
  SignTable() { for (int i = 0; i < 256; ++i) for (int k = 0; k < 8; ++k) v[i][k] = ((i >> k) & 1) ? -1.0f : 1.0f; }
};
const SignTable kSigns;

template <class Sink>
void rademacher(uint64_t key, int64_t start, int64_t n, Sink sink) {
  if (n <= 0) return;
  const int64_t end = start + n;
  int64_t e = start;
  for (; e < end && (e & 63); ++e)  // head: the rest of a word
    sink(e - start, ((word(key, (uint64_t)(e >> 6)) >> (e & 63)) & 1u) ? -1.0f : 1.0f);
  const int64_t w0 = e >> 6, w1 = end >> 6, base = e - start;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t c = w0; c < w1; ++c) {
    const uint64_t x = word(key, (uint64_t)c);
    const int64_t o = base + 64 * (c - w0);
    for (int k = 0; k < 8; ++k) {
      const float* t = kSigns.v[(x >> (8 * k)) & 255u];
#pragma omp simd
      for (int b = 0; b < 8; ++b) sink(o + 8 * k + b, t[b]);
    }
  }
  for (e = w1 > w0 ? (w1 << 6) : e; e < end; ++e)  // tail: the start of a last word
    sink(e - start, ((word(key, (uint64_t)(e >> 6)) >> (e & 63)) & 1u) ? -1.0f : 1.0f);
}

template <class Sink>
int run(int law, uint64_t key, int64_t start, int64_t n, Sink sink) {
  if (law == 0) { gaussian(key, start, n, sink); return 0; }
  if (law == 1) { rademacher(key, start, n, sink); return 0; }
  return 1;
}

}  // namespace

extern "C" {

// out[o] = factor·u[start + o], o < n
int ho_fill(int law, uint64_t key, int64_t start, int64_t n, float factor, float* out) {
  return run(law, key, start, n, [=](int64_t o, float u) { out[o] = factor * u; });
}

// su = factor·u; plus[o] = w[o] + su, minus[o] = w[o] − su (a paired probe's two points, one pass)
int ho_pair(int law, uint64_t key, int64_t start, int64_t n, float factor, const float* w,
            float* plus, float* minus) {
  return run(law, key, start, n, [=](int64_t o, float u) {
    const float su = factor * u;
    plus[o] = w[o] + su;
    minus[o] = w[o] - su;
  });
}

// p[o] = p[o] + factor·u[start + o], in place (an SGD update of one direction)
int ho_axpy(int law, uint64_t key, int64_t start, int64_t n, float factor, float* p) {
  return run(law, key, start, n, [=](int64_t o, float u) { p[o] = p[o] + factor * u; });
}

int ho_version() { return 1; }
}
