// Job files: read, check, override cluster.workers (see job_file.h).
#include "client/job_file.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace relora::client {

JobFile read_job_file(const std::string& path, bool check) {
  JobFile file;
  file.path = path;
  // stdio rather than ifstream: errno says why (missing file, a directory, no permission).
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) throw JobSpecError(path + ": cannot read job spec: " + std::strerror(errno));
  char buf[8192];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) file.text.append(buf, n);
  const int err = std::ferror(f) ? errno : 0;
  std::fclose(f);
  if (err != 0) throw JobSpecError(path + ": cannot read job spec: " + std::strerror(err));
  if (check) {
    file.spec = parse_job_spec_yaml(file.text, path);
    resolve_job_spec(file.spec);
    try {
      validate_job_spec(file.spec);
    } catch (const JobSpecError& e) {
      throw JobSpecError(path + ": " + e.what());
    }
  }
  return file;
}

std::string override_cluster_workers(const std::string& yaml_text, int workers, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw JobSpecError(source + ": YAML error: " + e.what());
  }
  if (!root.IsMap()) throw JobSpecError(source + ": a job spec must be a YAML mapping");
  YAML::Node cluster = root["cluster"];
  if (cluster && !cluster.IsNull() && !cluster.IsMap()) {
    throw JobSpecError(source + ": cluster: expected a mapping of fields");
  }
  if (!cluster || cluster.IsNull()) {
    root["cluster"] = YAML::Node(YAML::NodeType::Map);
  }
  root["cluster"]["workers"] = workers;
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

}  // namespace relora::client
