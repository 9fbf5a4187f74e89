// Fuzz target: a job spec file through load_job_spec_file (YAML parse, defaults, validation), as
// the CLI and the coordinator load specs that users submit.
// Properties checked besides "no crash, no leak, no UB":
//  * a rejected spec raises JobSpecError naming the file;
//  * an accepted spec survives the JSON round trip used by the coordinator's store and by
//    checkpoints unchanged, and resolving it again changes nothing.
#include <google/protobuf/util/message_differencer.h>

#include "common/job_spec.h"
#include "tests/fuzz/fuzz_util.h"

using relora::fuzz::contract_broken;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static relora::fuzz::MemFile file("job.yaml");
  file.rewrite(data, size);
  relora::v1::JobSpec spec;
  try {
    spec = relora::load_job_spec_file(file.path());
  } catch (const relora::JobSpecError& e) {
    relora::fuzz::expect_names(e, file.path());
    return 0;
  }
  // Accepted: the round trips must be exact.
  relora::v1::JobSpec again = spec;
  relora::resolve_job_spec(again);
  if (!google::protobuf::util::MessageDifferencer::Equals(spec, again))
    contract_broken("resolve_job_spec is not idempotent on an accepted spec");
  relora::v1::JobSpec back;
  try {
    back = relora::job_spec_from_json(relora::job_spec_to_json(spec));
  } catch (const relora::JobSpecError& e) {
    contract_broken(std::string("an accepted spec does not survive JSON: ") + e.what());
  }
  if (!google::protobuf::util::MessageDifferencer::Equals(spec, back))
    contract_broken("an accepted spec changes in the JSON round trip");
  return 0;
}
