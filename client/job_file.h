// Job files on the client side: reading, the local check before submitting, and the
// cluster.workers override of `relora local --workers N`.
//
// The coordinator parses and validates every spec again; checking here first only turns a typo
// into an instant error naming the file and field, without a round trip.
#pragma once

#include <string>

#include "common/job_spec.h"

namespace relora::client {

struct JobFile {
  std::string path;
  std::string text;             // exactly what is sent to the coordinator
  relora::v1::JobSpec spec;     // resolved and validated (when checked)
};

// Reads `path`; with `check`, also parses, resolves and validates it. Throws JobSpecError with a
// one-line message naming the file (and the field).
JobFile read_job_file(const std::string& path, bool check = true);

// Returns `yaml_text` with cluster.workers set to `workers`, adding the section if missing.
// Other fields are kept (comments and formatting are not). Throws JobSpecError if the text is
// not a YAML mapping or `cluster` is not a mapping.
std::string override_cluster_workers(const std::string& yaml_text, int workers, const std::string& source);

}  // namespace relora::client
