// An export's tokenizer read back the way Hugging Face and llama.cpp read it, and checked against the
// ids our training pipeline produces for the same text (issue #22; docs/tokenizer.md).
//
// Hugging Face. AutoTokenizer reads tokenizer_config.json: tokenizer_class LlamaTokenizer. The slow
// LlamaTokenizer with legacy=true and split_special_tokens=true tokenizes a text as one
// sp_model.encode(text) of the shipped tokenizer.model; build_inputs_with_special_tokens then puts
// [bos] in front if add_bos_token and [eos] behind if add_eos_token, the ids being
// convert_tokens_to_ids(bos_token / eos_token), i.e. the pieces' ids. LlamaForCausalLM's
// generate() takes config.json's bos/eos/pad_token_id. hugging_face_encode() below is that path.
//
// llama.cpp. convert_hf_to_gguf.py's LlamaModel.set_vocab calls _set_vocab_sentencepiece for any
// tokenizer.model, which writes tokenizer.ggml.model "llama": llama.cpp's SentencePiece tokenizer
// (LLAMA_VOCAB_TYPE_SPM), whatever the file's trainer_spec.model_type says. Only T5Model.set_vocab
// reads model_type (1 unigram -> "t5", llama.cpp's unigram tokenizer; 2 bpe -> the same "llama"
// path), and a LlamaForCausalLM export never goes there. gguf's SpecialVocab takes the special
// ids from config.json's *_token_id and add_bos / add_eos from tokenizer_config.json; newer
// converters take add_space_prefix from its add_prefix_space. llama_cpp_spm_encode() below is that
// tokenizer: a space in front, spaces to U+2581, then the highest-scoring adjacent merge that forms
// a vocabulary entry, first, until none is left; characters that are no entry become <0xXX> byte
// pieces, or, where the vocabulary has none, unordered_map::at throws (the abort of the issue).
// That is SentencePiece's BPE encode on an identity-normalized text, so it reproduces a BPE model
// trained without normalization (ours by default) exactly, and a unigram model (T5's, or ours
// with data.tokenizer_model_type: unigram) not at all.
#include "worker/train/export.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <queue>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/synthetic_text.h"
#include "tests/test_paths.h"
#include "worker/data/documents.h"
#include "worker/data/token_file.h"
#include "worker/data/tokenizer.h"

namespace relora::train {
namespace {

namespace fs = std::filesystem;
using data::SpmModelInfo;
using data::Tokenizer;
using data::TokenizerModelType;
using Json = nlohmann::json;
using relora::testing::shared_data;
using relora::testing::TempDir;

constexpr int64_t kSeqLen = 32;
constexpr int kPieceUnknown = 2, kPieceControl = 3, kPieceUserDefined = 4, kPieceByte = 6;

// Text from the training corpus's alphabet, text with characters no training text had, whitespace
// the normalizers treat differently, digits, and the special pieces' strings as plain text.
const std::vector<std::string> kTexts = {
    "Hello world, this is a test.",
    "Bale kotin ra, fenti do? Maso li.",
    "Gr\xC3\xBC\xC3\x9F" "e, \xE6\x9D\xB1\xE4\xBA\xAC \xF0\x9F\x9A\x80",  // "Grüße, 東京 🚀"
    "  two  spaces\tand a tab\nand a newline ",
    "In 2024 there were 1,234 items.",
    "literal </s> and <s> and <unk> in a text",
};
const std::string& kOutsideText = kTexts[2];

Json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  return Json::parse(in);
}

int piece_id(const SpmModelInfo& info, const std::string& piece) {
  for (size_t i = 0; i < info.pieces.size(); ++i)
    if (info.pieces[i] == piece) return static_cast<int>(i);
  throw std::runtime_error("no piece " + piece);
}

// A token string from tokenizer_config.json (a string, or {"content": ...}) to its id, or -1 for null.
int token_id(const SpmModelInfo& info, const Json& token) {
  if (token.is_null()) return -1;
  return piece_id(info, token.is_object() ? token.at("content").get<std::string>() : token.get<std::string>());
}

// A model small enough to export in milliseconds; its vocabulary covers the tokenizer's.
model::Llama tiny_model(int64_t vocab_size) {
  model::LlamaConfig c;
  c.vocab_size = vocab_size;
  c.hidden_size = 16;
  c.num_layers = 1;
  c.num_heads = 2;
  c.intermediate_size = 32;
  c.max_seq_len = kSeqLen;
  return model::Llama(c);
}

// What the slow LlamaTokenizer (AutoTokenizer.from_pretrained(dir, use_fast=False)) returns for
// tokenizer(text)["input_ids"], from the export's files alone.
std::vector<int> hugging_face_encode(const std::string& dir, const std::string& text) {
  const Json config = read_json(dir + "/tokenizer_config.json");
  // The path this emulation covers: any other would not be one sp_model.encode of the text.
  if (config.at("tokenizer_class") != "LlamaTokenizer" || config.at("legacy") != true ||
      config.at("split_special_tokens") != true)
    throw std::runtime_error("tokenizer_config.json selects another tokenization: " + config.dump());
  const Tokenizer sp = Tokenizer::load(dir + "/tokenizer.model");
  const SpmModelInfo info = sp.describe();
  std::vector<int> ids;
  if (config.at("add_bos_token").get<bool>()) ids.push_back(token_id(info, config.at("bos_token")));
  for (int id : sp.encode(text)) ids.push_back(id);
  if (config.at("add_eos_token").get<bool>()) ids.push_back(token_id(info, config.at("eos_token")));
  return ids;
}

// llama.cpp's SentencePiece tokenizer (llama-vocab.cpp, llm_tokenizer_spm) on the vocabulary
// convert_hf_to_gguf.py writes: every piece with its score. Throws std::out_of_range where
// llama.cpp's byte_to_token would (no <0xXX> piece and no one-byte piece for a byte).
std::vector<int> llama_cpp_spm_encode(const SpmModelInfo& vocab, bool add_space_prefix, const std::string& raw) {
  std::unordered_map<std::string, int> token_to_id;
  for (size_t i = 0; i < vocab.pieces.size(); ++i) token_to_id[vocab.pieces[i]] = static_cast<int>(i);

  std::string text;
  for (char ch : (add_space_prefix ? " " : "") + raw) text += ch == ' ' ? std::string("\xE2\x96\x81") : std::string(1, ch);

  struct Symbol {
    int prev, next;
    size_t start, n;
  };
  std::vector<Symbol> symbols;
  for (size_t offs = 0; offs < text.size();) {
    static const size_t kUtf8Len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    const size_t n = std::min(kUtf8Len[static_cast<unsigned char>(text[offs]) >> 4], text.size() - offs);
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({index - 1, offs + n == text.size() ? -1 : index + 1, offs, n});
    offs += n;
  }
  struct Bigram {
    int left, right;
    float score;
    size_t size;
  };
  auto lower = [](const Bigram& l, const Bigram& r) { return l.score < r.score || (l.score == r.score && l.left > r.left); };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(lower)> queue(lower);
  auto try_add_bigram = [&](int left, int right) {
    if (left == -1 || right == -1) return;
    const std::string merged = text.substr(symbols[left].start, symbols[left].n + symbols[right].n);
    const auto it = token_to_id.find(merged);
    if (it == token_to_id.end()) return;
    queue.push({left, right, vocab.scores[static_cast<size_t>(it->second)], merged.size()});
  };
  for (size_t i = 1; i < symbols.size(); ++i) try_add_bigram(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& left = symbols[b.left];
    Symbol& right = symbols[b.right];
    if (left.n == 0 || right.n == 0 || left.n + right.n != b.size) continue;  // already merged otherwise
    left.n += right.n;
    right.n = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = b.left;
    try_add_bigram(left.prev, b.left);
    try_add_bigram(b.left, left.next);
  }
  // Merges only ever form vocabulary entries, so a symbol that is none is a single character that
  // no merge touched (llama.cpp's rev_merge resegmentation never applies): it becomes bytes.
  std::vector<int> ids;
  for (int i = symbols.empty() ? -1 : 0; i != -1; i = symbols[i].next) {
    const std::string piece = text.substr(symbols[i].start, symbols[i].n);
    if (const auto it = token_to_id.find(piece); it != token_to_id.end()) {
      ids.push_back(it->second);
      continue;
    }
    for (unsigned char byte : piece) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "<0x%02X>", byte);
      const auto it = token_to_id.find(hex);
      ids.push_back(it != token_to_id.end() ? it->second : token_to_id.at(std::string(1, static_cast<char>(byte))));
    }
  }
  return ids;
}

// What llama.cpp returns for llama_tokenize(text, add_special=true, parse_special=false) on the
// GGUF converted from `dir`: special ids from config.json, add_bos / add_eos and the space prefix
// from tokenizer_config.json. Pieces of type user-defined would be split out first; our models
// have none (checked by the callers).
std::vector<int> llama_cpp_encode(const std::string& dir, const std::string& text) {
  const Json config = read_json(dir + "/config.json");
  const Json tokenizer_config = read_json(dir + "/tokenizer_config.json");
  const SpmModelInfo vocab = Tokenizer::load(dir + "/tokenizer.model").describe();
  std::vector<int> ids;
  if (tokenizer_config.at("add_bos_token").get<bool>()) ids.push_back(config.at("bos_token_id").get<int>());
  for (int id : llama_cpp_spm_encode(vocab, tokenizer_config.value("add_prefix_space", true), text)) ids.push_back(id);
  if (tokenizer_config.at("add_eos_token").get<bool>()) ids.push_back(config.at("eos_token_id").get<int>());
  return ids;
}

// The ids training sees for `texts` as documents: a token file made by the training pipeline's
// own tokenize_to_cache() from a JSON-lines corpus holding them.
std::vector<int> training_ids(const Tokenizer& tokenizer, const std::vector<std::string>& texts, const TempDir& dir) {
  const std::string corpus = dir.file("corpus.jsonl");
  {
    std::ofstream out(corpus, std::ios::binary | std::ios::trunc);
    for (const auto& text : texts) out << Json{{"text", text}}.dump() << "\n";
  }
  const data::TokenFile tokens(data::tokenize_to_cache({corpus}, tokenizer, dir.file("cache")));
  return std::vector<int>(tokens.data(), tokens.data() + tokens.size());
}

// Exports a tiny model with `tokenizer` and checks the declaration against the model file: the
// special-token ids in all three files are the model's own, each names a piece of the right type,
// and absent ones are null.
void expect_declaration_matches_model(const std::string& dir, const Tokenizer& tokenizer) {
  const SpmModelInfo info = tokenizer.describe();
  const Json config = read_json(dir + "/config.json");
  const Json tokenizer_config = read_json(dir + "/tokenizer_config.json");
  const Json special = read_json(dir + "/special_tokens_map.json");
  EXPECT_EQ(tokenizer_config.at("tokenizer_class"), "LlamaTokenizer");
  EXPECT_EQ(tokenizer_config.at("add_bos_token"), false) << "training adds no BOS";
  EXPECT_EQ(tokenizer_config.at("add_eos_token"), false) << "a prompt gets no EOS (documents end in one)";
  EXPECT_EQ(tokenizer_config.at("model_max_length"), kSeqLen);
  EXPECT_EQ(tokenizer_config.at("add_prefix_space"), info.add_dummy_prefix);
  const std::pair<const char*, int> kinds[] = {
      {"bos", info.bos_id}, {"eos", info.eos_id}, {"unk", info.unk_id}, {"pad", info.pad_id}};
  for (const auto& [kind, id] : kinds) {
    const std::string token = std::string(kind) + "_token";
    SCOPED_TRACE(token);
    EXPECT_EQ(token_id(info, tokenizer_config.at(token)), id);
    if (id < 0) {
      EXPECT_FALSE(special.contains(token));
    } else {
      EXPECT_EQ(token_id(info, special.at(token)), id);
      EXPECT_EQ(info.types[static_cast<size_t>(id)], std::string(kind) == "unk" ? kPieceUnknown : kPieceControl);
    }
    if (std::string(kind) != "unk") {  // config.json carries bos, eos, pad
      const Json& config_id = config.at(token + "_id");
      EXPECT_EQ(config_id.is_null() ? -1 : config_id.get<int>(), id);
    }
  }
  EXPECT_EQ(std::count(info.types.begin(), info.types.end(), kPieceUserDefined), 0);
  std::ifstream a(tokenizer.model_path(), std::ios::binary), b(dir + "/tokenizer.model", std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(a), {}), std::string(std::istreambuf_iterator<char>(b), {}));
}

// Hugging Face's ids, plus the EOS training puts after each document, are exactly the training ids.
void expect_hugging_face_tokenizes_as_training(const std::string& dir, const Tokenizer& tokenizer) {
  const int eos = read_json(dir + "/config.json").at("eos_token_id").get<int>();
  std::vector<int> expected;
  for (const auto& text : kTexts) {
    const auto ids = hugging_face_encode(dir, text);
    expected.insert(expected.end(), ids.begin(), ids.end());
    expected.push_back(eos);
  }
  TempDir work;
  EXPECT_EQ(training_ids(tokenizer, kTexts, work), expected);
}

TEST(TrainExport, TrainedBpeTokenizerLoadsInHuggingFaceAndLlamaCppAsTrained) {
  // The tokenizer the tiny training jobs use (tests/tiny_job.h): the default recipe, 512 pieces.
  const Tokenizer tokenizer = Tokenizer::train_or_load_cached({relora::testing::synthetic_text_file()}, 512,
                                                             relora::testing::binary_path("test-cache"));
  const SpmModelInfo info = tokenizer.describe();
  ASSERT_EQ(info.model_type, 2) << "bpe";
  EXPECT_TRUE(info.byte_fallback);
  EXPECT_EQ(info.normalizer_name, "identity");
  EXPECT_FALSE(info.remove_extra_whitespaces);
  // LLaMA's layout: unk 0, bos 1, eos 2, no pad.
  EXPECT_EQ(info.unk_id, 0);
  EXPECT_EQ(info.bos_id, 1);
  EXPECT_EQ(info.eos_id, 2);
  EXPECT_EQ(info.pad_id, -1);

  TempDir out;
  auto model = tiny_model(512);
  export_hf_model(model, tokenizer.model_path(), kSeqLen, out.path());
  expect_declaration_matches_model(out.path(), tokenizer);
  const Json config = read_json(out.file("config.json"));
  EXPECT_EQ(config.at("bos_token_id"), 1);
  EXPECT_EQ(config.at("eos_token_id"), 2);
  EXPECT_TRUE(config.at("pad_token_id").is_null());
  EXPECT_EQ(read_json(out.file("special_tokens_map.json")),
            (Json{{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}}));

  expect_hugging_face_tokenizes_as_training(out.path(), tokenizer);
  for (const auto& text : kTexts) {
    SCOPED_TRACE(text);
    // llama.cpp's LLaMA conversion gives exactly the same ids as Hugging Face, hence as training.
    EXPECT_EQ(llama_cpp_encode(out.path(), text), hugging_face_encode(out.path(), text));
    // Lossless: no unk, and the text decodes back byte for byte (no normalization).
    const auto ids = tokenizer.encode(text);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), info.unk_id), 0);
    EXPECT_EQ(tokenizer.decode(ids), text);
  }
  // Characters no training text had become their UTF-8 bytes, not unk.
  const auto ids = tokenizer.encode(kOutsideText);
  const auto bytes = std::count_if(ids.begin(), ids.end(), [&](int id) { return info.types[id] == kPieceByte; });
  EXPECT_GE(bytes, 4 + 3 + 3) << "the emoji's and both CJK characters' bytes at least";
}

// The claim the default rests on, on real web text: llama.cpp's tokenizer gives SentencePiece's ids
// for every document of the C4 sample, with a BPE tokenizer trained on it, newlines, accents,
// emoji and all.
TEST(TrainExport, LlamaCppTokenizesRealTextLikeSentencePieceForTheDefaultTokenizer) {
  RELORA_REQUIRE_SHARED_DATA("c4-sample/c4-train.00000-of-01024.first1000.json");
  TempDir cache;
  const std::string c4 = shared_data("c4-sample/c4-train.00000-of-01024.first1000.json");
  const Tokenizer tokenizer = Tokenizer::train_or_load_cached({c4}, 2048, cache.path());
  const SpmModelInfo vocab = tokenizer.describe();
  ASSERT_EQ(vocab.model_type, 2);
  size_t documents = 0, tokens = 0, bytes = 0;
  data::read_documents(c4, [&](std::string_view document) {
    const std::string text(document);
    const auto ids = tokenizer.encode(text);
    ASSERT_EQ(llama_cpp_spm_encode(vocab, vocab.add_dummy_prefix, text), ids) << "document " << documents;
    ASSERT_EQ(tokenizer.decode(ids), text) << "document " << documents;
    ++documents;
    tokens += ids.size();
    bytes += static_cast<size_t>(std::count_if(ids.begin(), ids.end(), [&](int id) { return vocab.types[id] == kPieceByte; }));
  });
  EXPECT_EQ(documents, 1000u);
  EXPECT_GT(bytes, 0u) << "the sample has characters outside the vocabulary";
  std::printf("C4 sample: %zu documents, %zu tokens (%zu byte pieces), identical in llama.cpp\n", documents, tokens, bytes);
}

TEST(TrainExport, T5SpieceDeclaresItsOwnIdsAndIsUnigramForLlamaCpp) {
  RELORA_REQUIRE_SHARED_DATA("t5-spiece/spiece.model");
  const Tokenizer t5 = Tokenizer::load(shared_data("t5-spiece/spiece.model"));
  const SpmModelInfo info = t5.describe();
  EXPECT_EQ(info.model_type, 1) << "unigram";
  EXPECT_FALSE(info.byte_fallback);
  EXPECT_EQ(info.normalizer_name, "nmt_nfkc");
  EXPECT_TRUE(info.remove_extra_whitespaces);

  TempDir out;
  auto model = tiny_model(32100);  // T5's model vocabulary: 32,000 pieces and 100 extra ids
  export_hf_model(model, t5.model_path(), kSeqLen, out.path());
  expect_declaration_matches_model(out.path(), t5);
  // T5's layout: pad 0, eos 1, unk 2, and no BOS, which must not default to LlamaConfig's 1.
  const Json config = read_json(out.file("config.json"));
  EXPECT_TRUE(config.at("bos_token_id").is_null());
  EXPECT_EQ(config.at("eos_token_id"), 1);
  EXPECT_EQ(config.at("pad_token_id"), 0);
  EXPECT_TRUE(read_json(out.file("tokenizer_config.json")).at("bos_token").is_null());
  EXPECT_EQ(read_json(out.file("special_tokens_map.json")),
            (Json{{"eos_token", "</s>"}, {"unk_token", "<unk>"}, {"pad_token", "<pad>"}}));

  // Hugging Face's slow LlamaTokenizer reproduces T5's ids, unknown characters included: without
  // byte pieces the emoji is unk (2), in training as in Hugging Face.
  expect_hugging_face_tokenizes_as_training(out.path(), t5);
  const auto ids = hugging_face_encode(out.path(), kOutsideText);
  EXPECT_NE(std::find(ids.begin(), ids.end(), info.unk_id), ids.end());

  // llama.cpp's LLaMA conversion would tokenize this unigram model with its BPE-style merges: other
  // ids (more of them) on plain text, and an abort on a character with no byte piece.
  const std::string plain = "Before we proceed any further, hear me speak. You are all resolved rather to die than to famish?";
  EXPECT_GT(llama_cpp_encode(out.path(), plain).size(), hugging_face_encode(out.path(), plain).size());
  EXPECT_THROW(llama_cpp_encode(out.path(), kOutsideText), std::out_of_range);
}

TEST(TrainExport, TrainedUnigramTokenizerKeepsT5LayoutAndDeclaresIt) {
  TempDir cache;
  const Tokenizer tokenizer = Tokenizer::train_or_load_cached({relora::testing::synthetic_text_file()}, 512,
                                                             cache.path(), TokenizerModelType::kUnigram);
  const SpmModelInfo info = tokenizer.describe();
  EXPECT_EQ(info.model_type, 1);
  EXPECT_FALSE(info.byte_fallback);
  EXPECT_EQ(info.pad_id, 0);
  EXPECT_EQ(info.eos_id, 1);
  EXPECT_EQ(info.unk_id, 2);
  EXPECT_EQ(info.bos_id, -1);

  TempDir out;
  auto model = tiny_model(512);
  export_hf_model(model, tokenizer.model_path(), kSeqLen, out.path());
  expect_declaration_matches_model(out.path(), tokenizer);
  expect_hugging_face_tokenizes_as_training(out.path(), tokenizer);
  // Characters outside the (ASCII) training text are unk, in training as in Hugging Face.
  const auto ids = hugging_face_encode(out.path(), kOutsideText);
  EXPECT_NE(std::find(ids.begin(), ids.end(), info.unk_id), ids.end());
}

TEST(TrainExport, WithoutATokenizerTheIdsAreNullAndNoTokenizerFilesRemain) {
  TempDir out;
  auto model = tiny_model(64);
  for (const char* stale : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    std::ofstream(out.file(stale)) << "from an earlier export";
  export_hf_model(model, "", kSeqLen, out.path());
  const Json config = read_json(out.file("config.json"));
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"}) EXPECT_TRUE(config.at(key).is_null()) << key;
  for (const char* stale : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    EXPECT_FALSE(fs::exists(out.file(stale))) << stale;
}

TEST(TrainExport, AMissingTokenizerModelFailsNamingIt) {
  TempDir out;
  auto model = tiny_model(64);
  const std::string missing = out.file("gone/spm.model");
  try {
    export_hf_model(model, missing, kSeqLen, out.file("export"));
    FAIL() << "exported without its tokenizer";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(out.file("export"))) << "nothing is written before the tokenizer is read";
}

}  // namespace
}  // namespace relora::train
