// Where a job's messages to the coordinator go: the narrow seam between the training side
// (RemoteCycleController, JobReporter) and the connection (CoordinatorClient), so that the
// training side can be tested with a recording sink and no network.
#pragma once

#include "relora/v1/service.pb.h"

namespace relora::cluster {

class MessageSink {
 public:
  virtual ~MessageSink() = default;
  // Queues `msg` for the coordinator and returns at once (thread-safe, never waits on the
  // network); the sink fills in worker_id. A `droppable` message (a progress report the next one
  // supersedes) may be discarded while the coordinator is unreachable; the others are kept and
  // sent, in order, once it is reachable again.
  virtual void send(relora::v1::WorkerMessage msg, bool droppable = false) = 0;
};

}  // namespace relora::cluster
