#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include <stdexcept>
#include <string>

#include "config/settings.h"
#include "train/schedule.h"
#include "train/trainer.h"

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

namespace {
std::string refusal(const wb::TrainSettings& t, std::int64_t batches_per_epoch) {
  try {
    wb::train_schedule(t, batches_per_epoch);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("train_schedule: step counts are bounded, the warm-up clamps without overflow") {
  wb::TrainSettings t;
  t.batch = 64;
  t.epochs = 2.5;
  t.warmup_epochs = 1;
  wb::TrainSchedule s = wb::train_schedule(t, 10);
  CHECK(s.total_steps == 25);
  CHECK(s.warmup_steps == 10);
  // A warm-up longer than training is all of training, however long it is.
  t.warmup_epochs = 1e300;
  s = wb::train_schedule(t, 10);
  CHECK(s.warmup_steps == 25);
  t.warmup_epochs = 0;

  // 1e300 epochs once trained one step (the double wrapped in llround): now refused.
  t.epochs = 1e300;
  CHECK(refusal(t, 10).find("train.epochs = 1e+300 (x 10 batches per epoch) is more than "
                            "1000000000000 steps") != std::string::npos);
  t.epochs = 1e12;  // 10^13 steps
  CHECK(refusal(t, 10).find("train.epochs = 1e+12") != std::string::npos);
  t.epochs = 1e11;  // exactly the limit
  CHECK(wb::train_schedule(t, 10).total_steps == wb::kMaxTrainSteps);
  t.epochs = 1;
  t.steps = wb::kMaxTrainSteps + 1;
  CHECK(refusal(t, 10).find("train.steps = 1000000000001 is more than") != std::string::npos);
  // Values the validator refuses in files, refused here too if they come from elsewhere.
  t.steps = 0;
  t.epochs = std::nan("");
  CHECK(refusal(t, 10).find("train.epochs = nan") != std::string::npos);
  t.epochs = 1;
  t.warmup_epochs = std::numeric_limits<double>::infinity();
  CHECK(refusal(t, 10).find("train.warmup_epochs = inf is not a finite number") !=
        std::string::npos);
}
