#include "train/data_access.h"

#include <numeric>

#include "data/datasets.h"
#include "data/view_overrides.h"

namespace wb {

namespace {

// Presents a data set with another channel count: grey is replicated to RGB, RGB becomes
// luma (torchvision's weights). Lets a transfer set feed a backbone built for the other kind.
class ChannelConvert final : public Dataset {
 public:
  ChannelConvert(std::shared_ptr<const Dataset> base, std::int64_t channels)
      : base_(std::move(base)), channels_(channels) {}
  std::int64_t size() const override { return base_->size(); }
  std::int64_t classes() const override { return base_->classes(); }
  std::int64_t channels() const override { return channels_; }
  std::int64_t image_size() const override { return base_->image_size(); }
  std::int64_t label(std::int64_t i) const override { return base_->label(i); }
  std::string describe() const override {
    return base_->describe() + " as " + (channels_ == 1 ? "grey" : "RGB");
  }
  Image image(std::int64_t i) const override {
    Image in = base_->image(i);
    Image out{channels_, in.height, in.width, {}};
    const std::int64_t pixels = in.height * in.width;
    out.pixels.resize(static_cast<std::size_t>(pixels * channels_));
    for (std::int64_t p = 0; p < pixels; ++p) {
      const std::uint8_t* src = &in.pixels[static_cast<std::size_t>(p * in.channels)];
      std::uint8_t* dst = &out.pixels[static_cast<std::size_t>(p * channels_)];
      if (channels_ == 1)
        dst[0] = static_cast<std::uint8_t>(0.2989 * src[0] + 0.587 * src[1] + 0.114 * src[2] + 0.5);
      else
        dst[0] = dst[1] = dst[2] = src[0];
    }
    return out;
  }
  std::vector<double> pixel_mean() const override { return convert(base_->pixel_mean()); }
  std::vector<double> pixel_std() const override { return convert(base_->pixel_std()); }
  bool has_clusters() const override { return base_->has_clusters(); }
  std::int64_t cluster(std::int64_t i) const override { return base_->cluster(i); }

 private:
  std::vector<double> convert(const std::vector<double>& v) const {
    if (channels_ == 3) return std::vector<double>(3, v.at(0));
    return {std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size())};
  }

  std::shared_ptr<const Dataset> base_;
  std::int64_t channels_;
};

}  // namespace

std::shared_ptr<const Dataset> open_data(const DataSettings& data, Split split) {
  auto opened = open_dataset(data, split);
  const std::int64_t channels = data.channels;
  if (channels == 0 || channels == opened->channels()) return opened;
  if ((channels != 1 && channels != 3) || (opened->channels() != 1 && opened->channels() != 3))
    throw std::runtime_error("cannot convert " + opened->describe() + " to " +
                             std::to_string(channels) + " channels");
  return std::make_shared<ChannelConvert>(std::move(opened), channels);
}

ViewRecipe make_recipe(const std::string& preset, const Params& overrides, std::int64_t size) {
  ViewRecipe recipe = view_preset(preset);
  recipe.size = size;
  return apply_view_overrides(recipe, overrides);
}

std::vector<ViewRecipe> train_recipes(const RunConfig& config, int views, std::int64_t size) {
  std::string recipe = config.settings.views.recipe;
  if (recipe == "auto") recipe = views >= 2 ? "moco" : "train";
  const std::vector<std::string> presets =
      recipe == "moco" ? std::vector<std::string>{"moco1", "moco2"}
                       : std::vector<std::string>(static_cast<std::size_t>(views), recipe);
  std::vector<ViewRecipe> recipes;
  for (std::size_t v = 0; v < presets.size(); ++v)
    recipes.push_back(make_recipe(presets[v], v == 0 ? config.view1 : config.view2, size));
  return recipes;
}

}  // namespace wb
