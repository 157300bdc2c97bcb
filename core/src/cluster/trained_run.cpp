#include "cluster/trained_run.h"

#include <stdexcept>

#include "store/run_dir.h"
#include "train/checkpoint.h"
#include "train/data_access.h"

namespace wb {

namespace fs = std::filesystem;

TrainedRun open_trained_run(const fs::path& dir, const Registry& registry) {
  const RunPaths paths(dir);
  if (!fs::is_regular_file(paths.config))
    throw std::invalid_argument(paths.config.string() + " not found: not a run directory");
  const fs::path checkpoint = paths.checkpoints / "last.pt";
  if (!fs::is_regular_file(checkpoint))
    throw std::invalid_argument(checkpoint.string() +
                                " not found: the run has not trained yet (run it with "
                                "'workbench run')");
  TrainedRun run;
  run.dir = dir;
  run.config = load_run_config(paths.config, registry);
  const auto train = open_data(run.config.settings.data, Split::Train);
  run.shape = DataShape{train->channels(), train->image_size(), train->classes()};
  run.comm = make_single_process_communicator();
  run.model = build_model(run.config, registry, run.shape, run.comm.get());
  CheckpointState state = checkpoint_state(run.model);
  run.step = load_checkpoint(checkpoint, state);
  run.device = pick_device(run.config.settings.run.device);
  run.model.to(run.device);
  run.model.train(false);
  return run;
}

}  // namespace wb
