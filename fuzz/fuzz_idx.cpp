// Fuzz target: the IDX reader (data/idx.cpp), raw and gzip. Input: 1 byte num_classes (0 =
// infer), 1 byte image_size (mod 33; 0 = native), 2 bytes big-endian length L, L bytes of the
// labels file, then the images file.
// Findings: crashes, sanitizer reports (an allocation beyond -malloc_limit_mb included), an
// exception other than std::runtime_error, and a data set that loads but breaks its contract
// (labels outside [0, classes), images of the wrong shape).
#include <cstdint>
#include <stdexcept>
#include <string>

#include "data/datasets.h"
#include "fuzz_files.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  const std::int64_t num_classes = data[0];
  const std::int64_t image_size = data[1] % 33;
  const std::size_t label_bytes = std::min<std::size_t>((data[2] << 8) | data[3], size - 4);
  const std::string labels = wbfuzz::write_file("labels-idx1-ubyte", data + 4, label_bytes);
  const std::string images =
      wbfuzz::write_file("images-idx3-ubyte", data + 4 + label_bytes, size - 4 - label_bytes);
  std::shared_ptr<const wb::data::NamedDataset> d;
  try {
    d = wb::data::load_idx(images, labels, "fuzz", image_size, {}, num_classes);
  } catch (const std::runtime_error&) {
    return 0;
  }
  if (d->size() <= 0 || d->channels() != 1 || d->image_size() <= 0)
    wbfuzz::broken("bad shape: " + d->describe());
  if (num_classes > 0 && d->classes() != num_classes) wbfuzz::broken("class count not kept");
  const std::int64_t side = d->image_size();
  for (std::int64_t i = 0; i < std::min<std::int64_t>(d->size(), 16); ++i) {
    const std::int64_t label = d->label(i);
    if (label < 0 || label >= d->classes()) wbfuzz::broken("label out of range");
    const wb::Image img = d->image(i);
    if (img.channels != 1 || img.height != side || img.width != side ||
        img.pixels.size() != static_cast<std::size_t>(side * side))
      wbfuzz::broken("image of the wrong shape");
  }
  return 0;
}
