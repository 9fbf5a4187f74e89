// Elastic world sizes keep the global batch: which worlds a job may run on, and the accumulation
// each rank gets there.
#include <gtest/gtest.h>

#include "common/elastic.h"
#include "common/job_spec.h"

namespace relora {
namespace {

relora::v1::JobSpec spec(int workers, int min_workers, int grad_accum) {
  relora::v1::JobSpec s = parse_job_spec_yaml("model: {preset: nano}\ndata: {train: [c.txt]}\n", "test");
  resolve_job_spec(s);
  s.mutable_cluster()->set_workers(workers);
  s.mutable_cluster()->set_min_workers(min_workers);
  s.mutable_training()->set_grad_accum_steps(grad_accum);
  return s;
}

TEST(Elastic, LargestWorldThatDividesTheMicroBatches) {
  EXPECT_EQ(elastic_world_size(spec(4, 1, 1), 8), 4);  // never more than cluster.workers
  EXPECT_EQ(elastic_world_size(spec(4, 1, 1), 4), 4);
  EXPECT_EQ(elastic_world_size(spec(4, 1, 1), 3), 2);  // 3 does not divide 4 micro-batches
  EXPECT_EQ(elastic_world_size(spec(4, 1, 3), 3), 3);  // 12 micro-batches: 3 ranks x 4
  EXPECT_EQ(elastic_world_size(spec(4, 1, 1), 1), 1);
  EXPECT_EQ(elastic_world_size(spec(4, 3, 1), 3), 0);  // 3 would be allowed, but does not divide
  EXPECT_EQ(elastic_world_size(spec(4, 4, 1), 3), 0);  // not elastic: all four or nothing
  EXPECT_EQ(elastic_world_size(spec(2, 1, 1), 0), 0);
}

TEST(Elastic, SpecForWorldKeepsTheGlobalBatch) {
  const auto s = spec_for_world(spec(4, 1, 2), 2);
  EXPECT_EQ(s.cluster().workers(), 2);
  EXPECT_EQ(s.training().grad_accum_steps(), 4);
  EXPECT_EQ(s.training().micro_batch_size() * s.training().grad_accum_steps() * s.cluster().workers(),
            spec(4, 1, 2).training().micro_batch_size() * 2 * 4);
  EXPECT_EQ(spec_for_world(spec(4, 1, 2), 4).training().grad_accum_steps(), 2);
  EXPECT_THROW(spec_for_world(spec(4, 1, 1), 3), std::invalid_argument);
}

TEST(Elastic, DefaultsAndValidation) {
  relora::v1::JobSpec s = parse_job_spec_yaml(
      "name: e\nmodel: {preset: nano}\ndata: {train: [c.txt]}\ntraining: {steps: 100}\nrelora: {mode: full}\n"
      "checkpoint: {dir: runs/x}\n"
      "cluster: {workers: 3}\n", "test");
  resolve_job_spec(s);
  EXPECT_EQ(s.cluster().min_workers(), 3);  // not elastic unless asked
  EXPECT_EQ(s.cluster().max_restarts(), 3);
  s.mutable_cluster()->set_min_workers(4);
  try {
    validate_job_spec(s);
    FAIL() << "min_workers > workers was accepted";
  } catch (const JobSpecError& e) {
    EXPECT_NE(std::string(e.what()).find("cluster.min_workers"), std::string::npos) << e.what();
  }
  s.mutable_cluster()->set_min_workers(1);
  s.mutable_cluster()->set_max_restarts(-1);
  EXPECT_THROW(validate_job_spec(s), JobSpecError);
}

}  // namespace
}  // namespace relora
