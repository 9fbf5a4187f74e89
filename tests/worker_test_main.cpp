// main() of the test programs that train: the process-wide setup every training program's main()
// makes (worker/train/runtime.h: one intra-op thread, the allocator setting), then the tests.
#include <gtest/gtest.h>

#include "worker/train/runtime.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  relora::train::configure_process(1);
  return RUN_ALL_TESTS();
}
