// The stall watchdog alone: it fires once when no beat comes within its limit, never while beats
// keep coming or while the training thread waits on the coordinator, and never when disabled.
#include "worker/cluster/stall_watchdog.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace relora::cluster {
namespace {

using namespace std::chrono_literals;

struct Fired {
  std::mutex mu;
  std::string what;
  int times = 0;
  void operator()(const std::string& w) {
    std::lock_guard<std::mutex> lock(mu);
    what = w;
    ++times;
  }
};

TEST(ClusterStallWatchdog, FiresOnceWhenNoBeatComesWithinTheLimitAndSaysWhereItWasLast) {
  Fired fired;
  StallWatchdog dog(200ms, {}, [&](const std::string& w) { fired(w); });
  dog.beat("a finished step", 41);
  std::this_thread::sleep_for(600ms);
  EXPECT_TRUE(dog.fired());
  std::lock_guard<std::mutex> lock(fired.mu);
  EXPECT_EQ(fired.times, 1);
  EXPECT_NE(fired.what.find("made no progress for"), std::string::npos) << fired.what;
  EXPECT_NE(fired.what.find("(limit 0.2 s)"), std::string::npos) << fired.what;
  EXPECT_NE(fired.what.find("its last sign of life was a finished step at step 41"), std::string::npos) << fired.what;
}

TEST(ClusterStallWatchdog, BeatsAndWaitsOnTheCoordinatorKeepItQuiet) {
  Fired fired;
  std::atomic<bool> waiting{false};
  StallWatchdog dog(300ms, [&] { return waiting.load(); }, [&](const std::string& w) { fired(w); });
  for (int i = 0; i < 10; ++i) {  // 1 s of steady beats
    dog.beat("a finished step", i);
    std::this_thread::sleep_for(100ms);
  }
  waiting = true;  // 1 s at a boundary: not a stall
  std::this_thread::sleep_for(1s);
  waiting = false;
  std::this_thread::sleep_for(100ms);  // the clock started again when the wait ended
  EXPECT_FALSE(dog.fired());
  std::this_thread::sleep_for(600ms);
  EXPECT_TRUE(dog.fired());
}

TEST(ClusterStallWatchdog, ALimitOfZeroNeverFires) {
  Fired fired;
  StallWatchdog dog(0ms, {}, [&](const std::string& w) { fired(w); });
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(dog.fired());
}

}  // namespace
}  // namespace relora::cluster
