// Stopping together. Ranks poll their cancel flag between steps, and a Cancel can reach one rank a
// step before another; a rank that stopped alone would leave the others waiting in the next
// collective until it times out. So every optimizer step carries each rank's vote (1 when its
// `local` function says so) in the step's own small all-reduce; once the sum is positive,
// agreed() is true on every rank after the same step.
//
// Threading: used on the rank's training thread; `local` may read state another thread sets (it
// must be thread-safe itself).
#pragma once

#include <functional>

namespace relora::distributed {

class StopVote {
 public:
  void set_local(std::function<bool()> local) { local_ = std::move(local); }
  double local_vote() const { return local_ && local_() ? 1.0 : 0.0; }
  void record(double sum_of_votes) {
    if (sum_of_votes > 0) agreed_ = true;
  }
  bool agreed() const { return agreed_; }

 private:
  std::function<bool()> local_;
  bool agreed_ = false;
};

}  // namespace relora::distributed
