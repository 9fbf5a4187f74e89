// Job paths confined to the worker's data and checkpoint roots: "..", absolute paths and symlinks
// that lead outside are rejected with the field named; paths inside are accepted.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/job_spec.h"
#include "common/path_roots.h"
#include "tests/test_paths.h"

namespace relora {
namespace {

namespace fs = std::filesystem;

class PathRootsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir_.file("data"));
    fs::create_directories(dir_.file("runs"));
    fs::create_directories(dir_.file("secret"));
    std::ofstream(dir_.file("data/corpus.txt")) << "text\n";
    std::ofstream(dir_.file("secret/keys.txt")) << "secret\n";
    fs::create_symlink(dir_.file("secret"), dir_.file("data/escape"));
    roots_.data = {dir_.file("data")};
    roots_.checkpoint = dir_.file("runs");
    spec_.mutable_data()->add_train(dir_.file("data/corpus.txt"));
    spec_.mutable_checkpoint()->set_dir(dir_.file("runs/job"));
  }

  // The error for the spec, or "" when accepted.
  std::string error() {
    try {
      check_job_paths(spec_, roots_);
      return "";
    } catch (const JobSpecError& e) {
      return e.what();
    }
  }

  relora::testing::TempDir dir_;
  PathRoots roots_;
  relora::v1::JobSpec spec_;
};

TEST_F(PathRootsTest, PathsInsideTheRootsAreAccepted) {
  spec_.mutable_data()->set_cache_dir(dir_.file("runs/job/cache"));
  EXPECT_EQ(error(), "");
  spec_.mutable_data()->set_train(0, dir_.file("runs/../data/corpus.txt"));  // ".." that stays inside
  EXPECT_EQ(error(), "");
}

TEST_F(PathRootsTest, DotDotAbsoluteAndSymlinkEscapesAreRejectedNamingTheField) {
  spec_.mutable_data()->set_train(0, dir_.file("data/../secret/keys.txt"));
  EXPECT_NE(error().find("data.train[0]: "), std::string::npos) << error();
  spec_.mutable_data()->set_train(0, "/etc/passwd");
  EXPECT_NE(error().find("outside the data roots"), std::string::npos) << error();
  spec_.mutable_data()->set_train(0, dir_.file("data/escape/keys.txt"));  // a symlink to secret/
  EXPECT_NE(error().find(dir_.file("secret/keys.txt")), std::string::npos) << error();
  spec_.mutable_data()->set_train(0, dir_.file("data/corpus.txt"));
  spec_.mutable_checkpoint()->set_dir(dir_.file("data/ckpt"));  // data is not writable
  EXPECT_NE(error().find("checkpoint.dir: "), std::string::npos) << error();
  spec_.mutable_checkpoint()->set_dir(dir_.file("runs/job"));
  spec_.mutable_data()->set_tokenizer_model(dir_.file("secret/spm.model"));
  EXPECT_NE(error().find("data.tokenizer_model: "), std::string::npos) << error();
}

TEST_F(PathRootsTest, NoRootsMeansNoConfinement) {
  spec_.mutable_data()->set_train(0, "/etc/passwd");
  roots_ = PathRoots{};
  EXPECT_EQ(error(), "");
}

}  // namespace
}  // namespace relora
