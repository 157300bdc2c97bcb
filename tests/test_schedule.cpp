#include <doctest/doctest.h>

#include <cmath>

#include "train/schedule.h"

TEST_CASE("learning rate: linear warmup then half-cosine") {
  const double peak = 1e-3, floor = 1e-5;
  // warmup 10 of 110 steps
  CHECK(wb::learning_rate(0, 110, 10, peak, floor) == 0.0);
  CHECK(wb::learning_rate(5, 110, 10, peak, floor) == doctest::Approx(5e-4));
  CHECK(wb::learning_rate(10, 110, 10, peak, floor) == doctest::Approx(peak));
  // halfway through the cosine: floor + (peak - floor) / 2
  CHECK(wb::learning_rate(60, 110, 10, peak, floor) == doctest::Approx((peak + floor) / 2));
  // a quarter: cos(pi/4)
  const double q = floor + (peak - floor) * 0.5 * (1 + std::cos(M_PI / 4));
  CHECK(wb::learning_rate(35, 110, 10, peak, floor) == doctest::Approx(q));
  CHECK(wb::learning_rate(110, 110, 10, peak, floor) == doctest::Approx(floor));
  // no warmup
  CHECK(wb::learning_rate(0, 100, 0, peak, 0.0) == doctest::Approx(peak));
}

TEST_CASE("momentum: cosine from m0 to 1") {
  CHECK(wb::momentum(0, 100, 0.99) == doctest::Approx(0.99));
  CHECK(wb::momentum(50, 100, 0.99) == doctest::Approx(0.995));
  CHECK(wb::momentum(100, 100, 0.99) == doctest::Approx(1.0));
  const double m = 1 - 0.5 * (1 + std::cos(M_PI * 0.25)) * 0.01;
  CHECK(wb::momentum(25, 100, 0.99) == doctest::Approx(m));
}
