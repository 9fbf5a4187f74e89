// From a job spec's data section to ready-to-train token blocks: tokenizer (loaded or trained and
// cached), corpora tokenized once into cached token files or read from `relora tokenize`
// indexes, per-source train block ranges, validation blocks and the deterministic sample order.
// Shared by the standalone trainer and the cluster worker.
//
// Nothing is read whole: every token file is memory-mapped and blocks are copied out as the
// sampler asks for them (token_stream.h), so memory does not grow with the corpus.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "relora/v1/job.pb.h"
#include "worker/data/batches.h"
#include "worker/data/mixture.h"
#include "worker/data/token_stream.h"
#include "worker/data/tokenizer.h"

namespace relora::train {

class DataPipeline {
 public:
  // Throws std::runtime_error naming the file or field that is wrong (a missing data file, a
  // tokenizer whose vocabulary exceeds the model's, too little text for one block, ...).
  explicit DataPipeline(const relora::v1::JobSpec& spec);

  // One block range per source: one source without data.train_weights, else one per entry.
  const std::vector<data::BlockRange>& train_sources() const { return train_; }
  // Names of the sources, for metrics: the data.train entry, or "train" for the single source.
  const std::vector<std::string>& source_names() const { return names_; }
  const data::BlockRange& validation() const { return validation_; }
  const data::MixtureOrder& order() const { return *order_; }
  // nullptr when the job trains on pre-tokenized data without a tokenizer model to load.
  const data::Tokenizer* tokenizer() const { return tokenizer_.get(); }
  std::string tokenizer_path() const { return tokenizer_ ? tokenizer_->model_path() : ""; }
  int eos_id() const { return tokenizer_ ? tokenizer_->eos_id() : 1; }
  int pad_id() const { return tokenizer_ ? tokenizer_->pad_id() : 0; }
  int64_t seq_len() const { return seq_len_; }

 private:
  // The token stream of `entries`, concatenated in order (see data_pipeline.cpp).
  std::unique_ptr<data::TokenStream> open_stream(const std::vector<std::string>& entries, const std::string& field,
                                                 const std::string& cache_dir) const;

  int64_t seq_len_;
  std::unique_ptr<data::Tokenizer> tokenizer_;
  std::vector<std::unique_ptr<data::TokenStream>> streams_;  // owned by the ranges below
  std::vector<data::BlockRange> train_;
  std::vector<std::string> names_;
  data::BlockRange validation_;
  std::unique_ptr<data::MixtureOrder> order_;
};

}  // namespace relora::train
