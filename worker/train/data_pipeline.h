// From a job spec's data section to ready-to-train token blocks: tokenizer (loaded or trained and
// cached), corpora tokenized once into cached token files, train/validation block ranges and the
// deterministic sample order. Shared by the standalone trainer and the cluster worker.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "relora/v1/job.pb.h"
#include "worker/data/batches.h"
#include "worker/data/token_file.h"
#include "worker/data/tokenizer.h"

namespace relora::train {

class DataPipeline {
 public:
  // Throws std::runtime_error naming the file or field that is wrong (a missing data file, a
  // tokenizer whose vocabulary exceeds the model's, too little text for one block, ...).
  explicit DataPipeline(const relora::v1::JobSpec& spec);

  const data::BlockRange& train() const { return train_; }
  const data::BlockRange& validation() const { return validation_; }
  const data::SampleOrder& order() const { return *order_; }
  // nullptr when the job trains on one pre-tokenized .tok file without data.tokenizer_model.
  const data::Tokenizer* tokenizer() const { return tokenizer_.get(); }
  std::string tokenizer_path() const { return tokenizer_ ? tokenizer_->model_path() : ""; }
  int eos_id() const { return tokenizer_ ? tokenizer_->eos_id() : 1; }
  int pad_id() const { return tokenizer_ ? tokenizer_->pad_id() : 0; }
  int64_t seq_len() const { return seq_len_; }

 private:
  int64_t seq_len_;
  std::unique_ptr<data::Tokenizer> tokenizer_;
  std::unique_ptr<data::TokenFile> train_tokens_;
  std::unique_ptr<data::TokenFile> validation_tokens_;  // only with data.validation files
  data::BlockRange train_;
  data::BlockRange validation_;
  std::unique_ptr<data::SampleOrder> order_;
};

}  // namespace relora::train
