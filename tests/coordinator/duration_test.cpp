#include "coordinator/duration.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace relora::coordinator {
namespace {

using std::chrono::milliseconds;

TEST(CoordinatorDuration, ParsesEveryUnit) {
  EXPECT_EQ(parse_duration("500ms"), milliseconds(500));
  EXPECT_EQ(parse_duration("5s"), milliseconds(5000));
  EXPECT_EQ(parse_duration("1.5s"), milliseconds(1500));
  EXPECT_EQ(parse_duration("2m"), milliseconds(120000));
  EXPECT_EQ(parse_duration("1h"), milliseconds(3600000));
  EXPECT_EQ(parse_duration("0ms"), milliseconds(0));
}

TEST(CoordinatorDuration, RejectsWhatIsAmbiguousOrWrong) {
  for (const char* bad : {"5", "", "s", "-5s", "5 s", "5sec", "1.2.3s", "abc"}) {
    try {
      parse_duration(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos) << e.what();
    }
  }
}

TEST(CoordinatorDuration, FormatsTheShortestExactSpelling) {
  EXPECT_EQ(format_duration(milliseconds(5000)), "5s");
  EXPECT_EQ(format_duration(milliseconds(300)), "300ms");
  EXPECT_EQ(format_duration(milliseconds(1500)), "1500ms");
  EXPECT_EQ(format_duration(milliseconds(120000)), "2m");
  EXPECT_EQ(format_duration(milliseconds(7200000)), "2h");
  EXPECT_EQ(parse_duration(format_duration(milliseconds(1500))), milliseconds(1500));
}

}  // namespace
}  // namespace relora::coordinator
