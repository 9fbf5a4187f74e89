#include "worker/train/data_pipeline.h"

#include <filesystem>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "worker/data/documents.h"
#include "worker/data/token_file.h"
#include "worker/data/token_index.h"

namespace fs = std::filesystem;

namespace relora::train {
namespace {

bool is_token_file(const std::string& path) { return fs::path(path).extension() == ".tok"; }

// The files of the entries that are not token indexes (directories expanded).
std::vector<std::string> plain_files(const std::vector<std::string>& entries) {
  std::vector<std::string> files;
  for (const auto& entry : entries) {
    if (data::is_token_index(entry)) continue;
    for (auto& f : data::expand_input_paths({entry})) files.push_back(std::move(f));
  }
  return files;
}

}  // namespace

// Entries are read in order: token indexes contribute their shards, .tok files themselves, and
// each run of text files one cached token file (tokenized once, then reused). For entries
// without indexes this is the stream relora always built (text and .tok files concatenated).
std::unique_ptr<data::TokenStream> DataPipeline::open_stream(const std::vector<std::string>& entries,
                                                             const std::string& field,
                                                             const std::string& cache_dir) const {
  auto stream = std::make_unique<data::TokenStream>();
  std::vector<std::string> text;
  auto flush_text = [&] {
    if (text.empty()) return;
    if (!tokenizer_) throw std::runtime_error(field + ": " + text.front() + " is text, and no tokenizer is known");
    // Ids are checked as blocks are read (token_stream.h), so no full read here either.
    stream->append(std::make_shared<const data::TokenFile>(data::tokenize_to_cache(text, *tokenizer_, cache_dir),
                                                           /*verify_checksum=*/false));
    text.clear();
  };
  for (const auto& entry : entries) {
    if (data::is_token_index(entry)) {
      flush_text();
      const std::string index_file = data::token_index_file(entry);
      if (tokenizer_) {
        const data::TokenIndex index = data::read_token_index(index_file);
        if (index.tokenizer_fingerprint != tokenizer_->fingerprint())
          throw std::runtime_error(field + ": " + index_file + " was tokenized with " + index.tokenizer_model +
                                   ", not with the job's tokenizer " + tokenizer_->model_path());
      }
      data::append_token_index(index_file, *stream);
      continue;
    }
    for (const auto& file : data::expand_input_paths({entry})) {
      if (!is_token_file(file)) {
        text.push_back(file);
        continue;
      }
      flush_text();
      auto tokens = std::make_shared<const data::TokenFile>(file, /*verify_checksum=*/false);
      if (tokenizer_ && static_cast<int>(tokens->vocab_size()) != tokenizer_->vocab_size())
        throw std::runtime_error(field + ": token file " + file + " has vocab size " +
                                 std::to_string(tokens->vocab_size()) + ", the tokenizer has " +
                                 std::to_string(tokenizer_->vocab_size()));
      stream->append(std::move(tokens));
    }
  }
  flush_text();
  return stream;
}

DataPipeline::DataPipeline(const relora::v1::JobSpec& spec) : seq_len_(spec.data().seq_len()) {
  const auto& d = spec.data();
  const std::vector<std::string> entries(d.train().begin(), d.train().end());
  if (entries.empty()) throw std::runtime_error("data.train: no input files found");

  // The tokenizer: the one named, else the one an index was made with, else one trained on the
  // text (none at all for pre-tokenized data without a model to load).
  const std::vector<std::string> files = plain_files(entries);
  bool has_text = false;
  for (const auto& f : files) has_text = has_text || !is_token_file(f);
  if (!d.tokenizer_model().empty()) {
    tokenizer_ = std::make_unique<data::Tokenizer>(data::Tokenizer::load(d.tokenizer_model()));
  } else if (has_text && !spec.model().from_hf().empty()) {
    // A new tokenizer's ids would mean other pieces than the ones the model learnt.
    throw std::runtime_error("model.from_hf: " + spec.model().from_hf() +
                             " has no tokenizer.model; name the model's SentencePiece tokenizer in "
                             "data.tokenizer_model (or train on pre-tokenized data: .tok files or a tokenize index)");
  } else if (has_text) {
    tokenizer_ = std::make_unique<data::Tokenizer>(
        data::Tokenizer::train_or_load_cached(files, d.tokenizer_vocab_size(), d.cache_dir(),
                                              data::tokenizer_model_type_from_name(d.tokenizer_model_type())));
  } else {
    for (const auto& entry : entries) {
      if (!data::is_token_index(entry)) continue;
      const auto index = data::read_token_index(data::token_index_file(entry));
      if (fs::exists(index.tokenizer_model))
        tokenizer_ = std::make_unique<data::Tokenizer>(data::Tokenizer::load(index.tokenizer_model));
      break;
    }
  }
  bool has_index = false;
  for (const auto& entry : entries) has_index = has_index || data::is_token_index(entry);
  if (files.empty() && !has_index) throw std::runtime_error("data.train: no input files found");
  if (tokenizer_ && tokenizer_->vocab_size() > spec.model().vocab_size())
    throw std::runtime_error("model.vocab_size: " + std::to_string(spec.model().vocab_size()) +
                             " is smaller than the tokenizer's " + std::to_string(tokenizer_->vocab_size()) +
                             " pieces (" + tokenizer_->model_path() + ")");

  // Sources: all entries as one stream, or one stream per weighted entry.
  std::vector<double> weights;
  if (d.train_weights_size() == 0) {
    streams_.push_back(open_stream(entries, "data.train", d.cache_dir()));
    names_.push_back("train");
    weights.push_back(1.0);
  } else {
    for (size_t i = 0; i < entries.size(); ++i) {
      streams_.push_back(open_stream({entries[i]}, "data.train[" + std::to_string(i) + "]", d.cache_dir()));
      names_.push_back(entries[i]);
      weights.push_back(d.train_weights(static_cast<int>(i)));
    }
  }
  for (size_t i = 0; i < streams_.size(); ++i) {
    if (static_cast<int64_t>(streams_[i]->vocab_size()) > spec.model().vocab_size())
      throw std::runtime_error("model.vocab_size: " + std::to_string(spec.model().vocab_size()) +
                               " is smaller than the vocabulary of the data of " + names_[i] + " (" +
                               std::to_string(streams_[i]->vocab_size()) + ")");
  }

  // Validation: its own files, or the tail of every source.
  const size_t sources = streams_.size();
  const double fraction = d.validation_size() > 0 ? 0.0 : d.validation_fraction();
  auto validation_stream = std::make_unique<data::TokenStream>();
  int64_t validation_blocks = 0;
  for (size_t i = 0; i < sources; ++i) {
    data::TrainValSplit split;
    try {
      split = data::split_blocks(*streams_[i], seq_len_, fraction);
    } catch (const std::runtime_error& e) {
      throw std::runtime_error("data.train: " + names_[i] + ": too little text: " + e.what());
    }
    train_.push_back(split.train);
    if (sources == 1) {
      validation_ = split.validation;
      continue;
    }
    validation_stream->append(*streams_[i], static_cast<uint64_t>(split.validation.first_block * seq_len_),
                              static_cast<uint64_t>(split.validation.num_blocks * seq_len_));
    validation_blocks += split.validation.num_blocks;
  }
  if (d.validation_size() > 0) {
    if (!tokenizer_) throw std::runtime_error("data.validation: needs data.tokenizer_model with pre-tokenized train data");
    streams_.push_back(open_stream({d.validation().begin(), d.validation().end()}, "data.validation", d.cache_dir()));
    validation_ = data::split_blocks(*streams_.back(), seq_len_, 0.0).train;
  } else if (sources > 1) {
    streams_.push_back(std::move(validation_stream));
    validation_ = data::BlockRange{streams_.back().get(), seq_len_, 0, validation_blocks};
  }

  std::vector<int64_t> blocks;
  for (const auto& range : train_) blocks.push_back(range.num_blocks);
  order_ = std::make_unique<data::MixtureOrder>(blocks, weights, spec.training().seed());
  for (size_t i = 0; i < sources; ++i) {
    spdlog::info("data: source {} (weight {}): {} train blocks of {} tokens", names_[i], weights[i],
                 train_[i].num_blocks, seq_len_);
  }
  spdlog::info("data: {} validation blocks (tokenizer {})", validation_.num_blocks,
               tokenizer_ ? tokenizer_->model_path() : "none: pre-tokenized");
}

}  // namespace relora::train
