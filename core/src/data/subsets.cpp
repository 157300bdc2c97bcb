// Subset wrappers: first N, class-balanced label fractions, k shots, class filters and the
// validation split. They hold indices into their base and (optionally) a label map.
#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <stdexcept>

#include "data/datasets.h"
#include "data/rng.h"

namespace wb::data {

namespace {

// Indices of every class, in dataset order.
std::map<std::int64_t, std::vector<std::int64_t>> by_class(const Dataset& data) {
  std::map<std::int64_t, std::vector<std::int64_t>> groups;
  for (std::int64_t i = 0; i < data.size(); ++i) groups[data.label(i)].push_back(i);
  return groups;
}

// Draws count(class, n) items of every class at random (seeded), returns the drawn ones and
// the rest, both in dataset order.
template <class Count>
std::pair<std::vector<std::int64_t>, std::vector<std::int64_t>> draw_per_class(const Dataset& data,
                                                                               std::uint64_t seed,
                                                                               std::uint64_t salt,
                                                                               Count count) {
  std::mt19937_64 rng(combine_seed(seed, salt));
  std::vector<std::int64_t> drawn, rest;
  for (auto& [label, items] : by_class(data)) {
    shuffle(items, rng);
    const auto n = std::min<std::int64_t>(count(static_cast<std::int64_t>(items.size())),
                                          static_cast<std::int64_t>(items.size()));
    drawn.insert(drawn.end(), items.begin(), items.begin() + n);
    rest.insert(rest.end(), items.begin() + n, items.end());
  }
  std::sort(drawn.begin(), drawn.end());
  std::sort(rest.begin(), rest.end());
  return {std::move(drawn), std::move(rest)};
}

std::string percent(double fraction) {
  std::ostringstream s;
  s << fraction * 100 << "%";
  return s.str();
}

// Salts keep the draws of different subset kinds independent under one subset_seed.
constexpr std::uint64_t kSaltFraction = 0xF4AC, kSaltShots = 0x5407, kSaltVal = 0x7A1;

}  // namespace

std::vector<std::int64_t> all_labels(const Dataset& data) {
  std::vector<std::int64_t> labels(data.size());
  for (std::int64_t i = 0; i < data.size(); ++i) labels[i] = data.label(i);
  return labels;
}

std::shared_ptr<const Dataset> first_n(std::shared_ptr<const Dataset> base, std::int64_t n) {
  if (n <= 0 || n >= base->size()) return base;
  std::vector<std::int64_t> idx(n);
  for (std::int64_t i = 0; i < n; ++i) idx[i] = i;
  return subset(std::move(base), std::move(idx), "first " + std::to_string(n));
}

std::shared_ptr<const Dataset> label_fraction(std::shared_ptr<const Dataset> base, double fraction,
                                              std::uint64_t seed) {
  if (!(fraction > 0.0 && fraction <= 1.0))
    throw std::invalid_argument("label fraction must be in (0, 1], got " +
                                std::to_string(fraction));
  if (fraction == 1.0) return base;
  auto [kept, rest] = draw_per_class(*base, seed, kSaltFraction, [&](std::int64_t count) {
    return std::max<std::int64_t>(1, std::llround(fraction * static_cast<double>(count)));
  });
  return subset(std::move(base), std::move(kept),
                percent(fraction) + " labels (seed " + std::to_string(seed) + ")");
}

std::shared_ptr<const Dataset> k_shots(std::shared_ptr<const Dataset> base, std::int64_t k,
                                       std::uint64_t seed) {
  if (k <= 0) throw std::invalid_argument("shots must be > 0, got " + std::to_string(k));
  auto [kept, rest] = draw_per_class(*base, seed, kSaltShots, [&](std::int64_t) { return k; });
  return subset(std::move(base), std::move(kept),
                std::to_string(k) + " shots (seed " + std::to_string(seed) + ")");
}

std::shared_ptr<const Dataset> filter_classes(std::shared_ptr<const Dataset> base,
                                              const std::vector<std::int64_t>& classes,
                                              bool relabel) {
  const std::int64_t n = base->classes();
  std::vector<std::int64_t> map(n, -1);
  std::vector<std::string> base_names;
  if (auto* named = dynamic_cast<const NamedDataset*>(base.get()))
    base_names = named->class_names();
  std::vector<std::string> names;
  std::string list;
  for (std::size_t i = 0; i < classes.size(); ++i) {
    const std::int64_t c = classes[i];
    if (c < 0 || c >= n)
      throw std::invalid_argument("class filter: class " + std::to_string(c) + " is not in " +
                                  name_of(*base) + " (classes 0.." + std::to_string(n - 1) + ")");
    if (map[c] >= 0)
      throw std::invalid_argument("class filter: class " + std::to_string(c) + " listed twice");
    map[c] = static_cast<std::int64_t>(i);
    names.push_back(c < static_cast<std::int64_t>(base_names.size()) ? base_names[c]
                                                                     : std::to_string(c));
    list += (i ? "," : "") + std::to_string(c);
  }
  std::vector<std::int64_t> idx;
  for (std::int64_t i = 0; i < base->size(); ++i)
    if (map[base->label(i)] >= 0) idx.push_back(i);
  std::string name = name_of(*base) + ", classes [" + list + "]" + (relabel ? " relabelled" : "");
  if (!relabel) map.clear();  // labels pass through; class names come from the base
  return relabelled_subset(std::move(base), std::move(idx), std::move(name), std::move(map),
                           std::move(names));
}

TrainVal split_validation(std::shared_ptr<const Dataset> base, double fraction,
                          std::uint64_t seed) {
  if (!(fraction > 0.0 && fraction < 1.0))
    throw std::invalid_argument("validation fraction must be in (0, 1), got " +
                                std::to_string(fraction));
  auto [val, train] = draw_per_class(*base, seed, kSaltVal, [&](std::int64_t count) {
    if (count < 2) return std::int64_t{0};
    const auto n = std::llround(fraction * static_cast<double>(count));
    return std::clamp<std::int64_t>(n, 1, count - 1);
  });
  const std::string tag = percent(fraction) + " (seed " + std::to_string(seed) + ")";
  return {subset(base, std::move(train), "minus validation " + tag),
          subset(base, std::move(val), "validation " + tag)};
}

}  // namespace wb::data
