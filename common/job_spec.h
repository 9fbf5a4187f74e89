// Loading, defaulting and validating job specs (proto/relora/v1/job.proto).
//
// A spec goes through three stages, each a function here:
//   parse   YAML text -> relora::v1::JobSpec, through protobuf's JSON mapping; unknown fields and
//           wrong types are errors naming the field path ("relora.rank: expected an integer").
//   resolve fill every unset field with its documented default and expand the model preset, so
//           that downstream code never sees an unset field.
//   validate reject out-of-range and contradictory settings, naming the field.
// load_job_spec_file() runs all three. Errors are thrown as JobSpecError.
#pragma once

#include <stdexcept>
#include <string>

#include "relora/v1/job.pb.h"

namespace relora {

class JobSpecError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// YAML text -> spec (no defaults applied). `source` names the file in error messages.
relora::v1::JobSpec parse_job_spec_yaml(const std::string& yaml_text,
                                        const std::string& source = "<job>");

// Fills defaults and expands model.preset into explicit model fields. Idempotent.
void resolve_job_spec(relora::v1::JobSpec& spec);

// Throws JobSpecError naming the first bad field. Expects a resolved spec.
void validate_job_spec(const relora::v1::JobSpec& spec);

// Reads, parses, resolves and validates. Relative data paths stay as written.
relora::v1::JobSpec load_job_spec_file(const std::string& path);

// The resolved spec as YAML-compatible JSON (for logs, checkpoints, the CLI's `-o json`).
std::string job_spec_to_json(const relora::v1::JobSpec& spec);
relora::v1::JobSpec job_spec_from_json(const std::string& json);

// What a job trains: relora.mode, parsed (validate_job_spec admits only these three names).
enum class TrainMode { kFull, kLora, kRelora };
TrainMode train_mode(const relora::v1::JobSpec& spec);

// Steps of the low-rank phase (training.steps - warm_start_steps; 0 in mode full).
int64_t low_rank_phase_steps(const relora::v1::JobSpec& spec);

}  // namespace relora
