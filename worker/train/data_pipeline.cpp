#include "worker/train/data_pipeline.h"

#include <stdexcept>

#include <spdlog/spdlog.h>

#include "worker/data/documents.h"

namespace relora::train {

DataPipeline::DataPipeline(const relora::v1::JobSpec& spec) : seq_len_(spec.data().seq_len()) {
  const auto& d = spec.data();
  const auto train_files = data::expand_input_paths({d.train().begin(), d.train().end()});
  if (train_files.empty()) throw std::runtime_error("data.train: no input files found");

  const bool pretokenized = train_files.size() == 1 && train_files[0].size() > 4 &&
                            train_files[0].compare(train_files[0].size() - 4, 4, ".tok") == 0;
  if (!d.tokenizer_model().empty()) {
    tokenizer_ = std::make_unique<data::Tokenizer>(data::Tokenizer::load(d.tokenizer_model()));
  } else if (!pretokenized && !spec.model().from_hf().empty()) {
    // A new tokenizer's ids would mean other pieces than the ones the model learnt.
    throw std::runtime_error("model.from_hf: " + spec.model().from_hf() +
                             " has no tokenizer.model; name the model's SentencePiece tokenizer in "
                             "data.tokenizer_model (or train on one pre-tokenized .tok file)");
  } else if (!pretokenized) {
    tokenizer_ = std::make_unique<data::Tokenizer>(
        data::Tokenizer::train_or_load_cached(train_files, d.tokenizer_vocab_size(), d.cache_dir(),
                                              data::tokenizer_model_type_from_name(d.tokenizer_model_type())));
  }
  if (tokenizer_ && tokenizer_->vocab_size() > spec.model().vocab_size())
    throw std::runtime_error("model.vocab_size: " + std::to_string(spec.model().vocab_size()) +
                             " is smaller than the tokenizer's " + std::to_string(tokenizer_->vocab_size()) +
                             " pieces (" + tokenizer_->model_path() + ")");

  if (tokenizer_) {
    train_tokens_ = std::make_unique<data::TokenFile>(data::tokenize_to_cache(train_files, *tokenizer_, d.cache_dir()));
  } else {
    // One pre-tokenized file and no tokenizer: train on its ids as they are.
    train_tokens_ = std::make_unique<data::TokenFile>(train_files[0]);
    if (static_cast<int64_t>(train_tokens_->vocab_size()) > spec.model().vocab_size())
      throw std::runtime_error("model.vocab_size: " + std::to_string(spec.model().vocab_size()) +
                               " is smaller than the vocabulary of " + train_files[0] + " (" +
                               std::to_string(train_tokens_->vocab_size()) + ")");
  }
  if (d.validation_size() > 0) {
    if (!tokenizer_) throw std::runtime_error("data.validation: needs data.tokenizer_model with a pre-tokenized train file");
    const auto val_files = data::expand_input_paths({d.validation().begin(), d.validation().end()});
    validation_tokens_ =
        std::make_unique<data::TokenFile>(data::tokenize_to_cache(val_files, *tokenizer_, d.cache_dir()));
    auto train_split = data::split_blocks(train_tokens_->data(), train_tokens_->size(), seq_len_, 0.0);
    auto val_split = data::split_blocks(validation_tokens_->data(), validation_tokens_->size(), seq_len_, 0.0);
    train_ = train_split.train;
    validation_ = val_split.train;
  } else {
    auto split = data::split_blocks(train_tokens_->data(), train_tokens_->size(), seq_len_, d.validation_fraction());
    train_ = split.train;
    validation_ = split.validation;
  }
  if (train_.num_blocks < 1) throw std::runtime_error("data.train: too little text for one block of seq_len tokens");
  order_ = std::make_unique<data::SampleOrder>(train_.num_blocks, spec.training().seed());
  spdlog::info("data: {} train blocks, {} validation blocks of {} tokens (tokenizer {})", train_.num_blocks,
               validation_.num_blocks, seq_len_, tokenizer_ ? tokenizer_->model_path() : "none: pre-tokenized");
}

}  // namespace relora::train
