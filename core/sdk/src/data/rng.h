// Deterministic random numbers for the data pipeline. Our own uniform draws (not the
// <random> distributions, whose algorithms differ between standard libraries) so that a seed
// gives the same views and orders everywhere.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace wb::data {

// SplitMix64 finaliser: a good 64-bit mixer for combining seeds.
inline std::uint64_t mix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Seed derived from several values; the order matters.
inline std::uint64_t combine_seed(std::uint64_t a, std::uint64_t b) {
  return mix64(a ^ mix64(b + 0x632BE59BD9B4E019ull));
}

// Uniform in [0, 1) with 53 random bits.
inline double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

inline double uniform(std::mt19937_64& rng, double lo, double hi) {
  return lo + (hi - lo) * uniform01(rng);
}

// Uniform integer in [0, n), n > 0 (multiply-shift: no modulo bias worth mentioning).
inline std::uint64_t uniform_index(std::mt19937_64& rng, std::uint64_t n) {
  return static_cast<std::uint64_t>((static_cast<unsigned __int128>(rng()) * n) >> 64);
}

inline bool bernoulli(std::mt19937_64& rng, double p) {
  return p > 0 && uniform01(rng) < p;
}

// Fisher-Yates shuffle with uniform_index.
template <class T>
void shuffle(std::vector<T>& v, std::mt19937_64& rng) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[uniform_index(rng, i)]);
}

}  // namespace wb::data
