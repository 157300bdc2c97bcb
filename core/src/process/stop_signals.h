// SIGINT (Ctrl-C) and SIGTERM (a scheduler's) as a stop request (workbench/stop.h) instead of
// the default death: the trainer stops after its step with a checkpoint, an evaluator at its
// next batch, and the files being written are closed. For the processes that train or evaluate
// (a point, `workbench eval`).
#pragma once

namespace wb {

void stop_on_signals();

}  // namespace wb
