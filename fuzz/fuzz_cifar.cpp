// Fuzz target: the CIFAR binary-batch reader (data/cifar.cpp). Input: 1 byte (bit 0: CIFAR-100),
// then the batch file.
// Findings: crashes, sanitizer reports, an exception other than std::runtime_error, and a data
// set that loads but breaks its contract (labels outside [0, classes), wrong image shapes).
#include <cstdint>
#include <stdexcept>
#include <string>

#include "data/datasets.h"
#include "fuzz_files.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const bool cifar100 = data[0] & 1;
  const std::string file = wbfuzz::write_file("batch.bin", data + 1, size - 1);
  std::shared_ptr<const wb::data::NamedDataset> d;
  try {
    d = wb::data::load_cifar({file}, cifar100, "fuzz", 0, {});
  } catch (const std::runtime_error&) {
    return 0;
  }
  if (d->size() <= 0 || d->channels() != 3 || d->image_size() != 32 ||
      d->classes() != (cifar100 ? 100 : 10))
    wbfuzz::broken("bad shape: " + d->describe());
  for (std::int64_t i = 0; i < d->size(); ++i) {
    const std::int64_t label = d->label(i);
    if (label < 0 || label >= d->classes()) wbfuzz::broken("label out of range");
    if (d->image(i).pixels.size() != 32 * 32 * 3) wbfuzz::broken("image of the wrong shape");
  }
  return 0;
}
