// Job spec: YAML parsing (field paths in errors), defaults, preset expansion, validation of every
// class of bad or contradictory setting, JSON round trips and file loading.
#include "common/job_spec.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <fstream>

#include "tests/test_paths.h"

namespace relora {
namespace {

using relora::v1::JobSpec;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// A small valid ReLoRA job; tests append or replace sections.
const char* const kMinimal = R"(name: test-run
model:
  preset: nano
data:
  train: [corpus.txt]
training:
  steps: 1000
relora:
  cycle_steps: 250
)";

JobSpec resolved(const std::string& yaml) {
  JobSpec spec = parse_job_spec_yaml(yaml, "job.yaml");
  resolve_job_spec(spec);
  return spec;
}

// The message of the first error of parse + resolve + validate, or "" when the spec is valid.
std::string error_of(const std::string& yaml) {
  try {
    validate_job_spec(resolved(yaml));
  } catch (const JobSpecError& e) {
    return e.what();
  }
  return "";
}

// kMinimal with the `relora:` section replaced.
std::string with_relora(const std::string& relora_section) {
  std::string y = kMinimal;
  return y.substr(0, y.find("relora:")) + relora_section;
}

TEST(JobSpec, FullSpecRoundTripsThroughJson) {
  const std::string yaml = R"(
name: relora-250m.c4_v2
model: {preset: 250m, rms_norm_eps: 1.0e-5, rope_theta: 10000}
data:
  train: [c4/train-00000.json.gz, c4/train-00001.json.gz]
  validation: [c4/validation.json.gz]
  tokenizer_model: t5/spiece.model
  seq_len: 512
  cache_dir: /tmp/cache
training:
  steps: 20000
  micro_batch_size: 24
  grad_accum_steps: 4
  lr: 5e-4
  warmup_steps: 500
  min_lr_ratio: 0.1
  weight_decay: 0.01
  grad_clip: 1.0
  dtype: bf16
  seed: 18446744073709551615
  adam_beta1: 0.9
  adam_beta2: 0.95
  adam_eps: 1e-8
  log_every_steps: 10
  activation_checkpointing: true
relora:
  mode: relora
  rank: 128
  alpha: 32
  dropout: 0.1
  warm_start_steps: 5000
  cycle_steps: 5000
  restart_warmup_steps: 100
  optimizer_reset: random
  prune_ratio: 0.999
  lr: 1e-3
eval: {every_steps: 1000, max_tokens: 10000000}
checkpoint: {dir: runs/x, every_steps: 5000, keep: 2}
cluster: {workers: 4, backend: nccl}
)";
  JobSpec spec = resolved(yaml);
  ASSERT_NO_THROW(validate_job_spec(spec));
  EXPECT_EQ(spec.training().seed(), 18446744073709551615ull);
  EXPECT_DOUBLE_EQ(spec.training().lr(), 5e-4);
  EXPECT_EQ(spec.data().train_size(), 2);
  EXPECT_FALSE(spec.data().has_tokenizer_vocab_size());  // a given tokenizer brings its own size
  EXPECT_EQ(low_rank_phase_steps(spec), 15000);
  EXPECT_TRUE(spec.training().activation_checkpointing());

  const std::string json = job_spec_to_json(spec);
  EXPECT_THAT(json, HasSubstr("\"cycle_steps\""));  // snake_case names
  JobSpec back = job_spec_from_json(json);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(spec, back)) << json;
  // The JSON is YAML too: feeding it back through the YAML parser gives the same spec.
  JobSpec again = resolved(json);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(spec, again)) << json;
}

TEST(JobSpec, DefaultsAreFilled) {
  JobSpec s = resolved(kMinimal);
  ASSERT_NO_THROW(validate_job_spec(s));
  EXPECT_DOUBLE_EQ(s.model().rms_norm_eps(), 1e-6);
  EXPECT_DOUBLE_EQ(s.model().rope_theta(), 10000);
  EXPECT_EQ(s.data().seq_len(), 256);
  EXPECT_DOUBLE_EQ(s.data().validation_fraction(), 0.05);
  EXPECT_EQ(s.data().tokenizer_vocab_size(), 4096);
  EXPECT_EQ(s.checkpoint().dir(), "runs/test-run");
  EXPECT_EQ(s.data().cache_dir(), "runs/test-run/cache");
  const auto& t = s.training();
  EXPECT_EQ(t.micro_batch_size(), 8);
  EXPECT_EQ(t.grad_accum_steps(), 1);
  EXPECT_DOUBLE_EQ(t.lr(), 1e-3);
  EXPECT_DOUBLE_EQ(t.min_lr_ratio(), 0.1);
  EXPECT_DOUBLE_EQ(t.weight_decay(), 0);
  EXPECT_DOUBLE_EQ(t.grad_clip(), 1.0);
  EXPECT_EQ(t.dtype(), "fp32");
  EXPECT_EQ(t.seed(), 42u);
  EXPECT_DOUBLE_EQ(t.adam_beta2(), 0.999);
  EXPECT_DOUBLE_EQ(t.adam_eps(), 1e-8);
  EXPECT_TRUE(t.has_log_every_steps());
  EXPECT_TRUE(t.has_activation_checkpointing());
  EXPECT_FALSE(t.activation_checkpointing());
  EXPECT_EQ(t.warmup_steps(), 100);  // min(500, 1000/10), within the 250-step cycle
  const auto& r = s.relora();
  EXPECT_EQ(r.mode(), "relora");
  EXPECT_EQ(r.rank(), 32);  // min(128, 128/4)
  EXPECT_DOUBLE_EQ(r.alpha(), 32);
  EXPECT_DOUBLE_EQ(r.dropout(), 0.1);
  EXPECT_EQ(r.warm_start_steps(), 0);
  EXPECT_EQ(r.restart_warmup_steps(), 25);
  EXPECT_EQ(r.optimizer_reset(), "magnitude");
  EXPECT_DOUBLE_EQ(r.prune_ratio(), 0.99);
  EXPECT_DOUBLE_EQ(r.lr(), 1e-3);
  EXPECT_EQ(s.eval().every_steps(), 100);
  EXPECT_EQ(s.eval().max_tokens(), 200000);
  EXPECT_EQ(s.checkpoint().every_steps(), 100);
  EXPECT_EQ(s.checkpoint().keep(), 3);
  EXPECT_EQ(s.cluster().workers(), 1);
  EXPECT_EQ(s.cluster().backend(), "gloo");
  EXPECT_EQ(low_rank_phase_steps(s), 1000);
}

TEST(JobSpec, ResolveIsIdempotent) {
  JobSpec once = resolved(kMinimal);
  JobSpec twice = once;
  resolve_job_spec(twice);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(once, twice));
}

TEST(JobSpec, WarmupDefaultIsCappedByCycleAndSteps) {
  JobSpec s = resolved(with_relora("relora: {cycle_steps: 50}\n"));
  EXPECT_EQ(s.training().warmup_steps(), 50);
  EXPECT_EQ(s.relora().restart_warmup_steps(), 5);
  // One step leaves no room for warmup; the default must not make the spec invalid.
  EXPECT_EQ(error_of("name: a\nmodel: {preset: nano}\ndata: {train: x}\ntraining: {steps: 1}\n"
                     "relora: {mode: full}\n"),
            "");
}

TEST(JobSpec, PresetExpandsAndExplicitFieldsOverride) {
  JobSpec s = resolved(std::string(kMinimal) + "  rank: 8\n");
  EXPECT_EQ(s.model().hidden_size(), 128);
  EXPECT_EQ(s.model().intermediate_size(), 352);

  std::string y = kMinimal;
  y.replace(y.find("  preset: nano"), 14, "  preset: MICRO\n  num_layers: 2\n  vocab_size: 1000");
  s = resolved(y);
  ASSERT_NO_THROW(validate_job_spec(s));
  EXPECT_EQ(s.model().preset(), "micro");  // canonical spelling
  EXPECT_EQ(s.model().hidden_size(), 256);
  EXPECT_EQ(s.model().num_layers(), 2);
  EXPECT_EQ(s.model().vocab_size(), 1000);
  EXPECT_EQ(s.data().tokenizer_vocab_size(), 1000);  // follows the model's vocab
}

TEST(JobSpec, ModelWithoutPresetNeedsEveryDimension) {
  std::string y = kMinimal;
  y.replace(y.find("  preset: nano"), 14,
            "  hidden_size: 64\n  num_layers: 2\n  num_heads: 4\n  vocab_size: 512");
  EXPECT_THAT(error_of(y), StartsWith("model.intermediate_size: required"));
  y.replace(y.find("  vocab_size"), 0, "  intermediate_size: 128\n");
  EXPECT_EQ(error_of(y), "");
}

// The worker reads the shape from the directory's config.json (worker/train/hf_config.h): the
// submitted spec is valid without it, and nothing here defaults what config.json will say.
TEST(JobSpec, FromHfNeedsNoShapeAndTrainsNoTokenizer) {
  std::string y = kMinimal;
  y.replace(y.find("  preset: nano"), 14, "  from_hf: models/llama");
  EXPECT_EQ(error_of(y), "");
  const JobSpec s = resolved(y);
  EXPECT_FALSE(s.model().has_hidden_size());
  EXPECT_FALSE(s.model().has_rms_norm_eps());
  EXPECT_FALSE(s.model().has_rope_theta());
  EXPECT_FALSE(s.relora().has_rank());  // hidden_size / 4 once the shape is known
  EXPECT_FALSE(s.data().has_tokenizer_vocab_size());
  std::string typed = y;
  typed.replace(typed.find("  train:"), 0, "  tokenizer_model_type: bpe\n");
  EXPECT_THAT(error_of(typed), StartsWith("data.tokenizer_model_type: applies to a tokenizer relora trains; "
                                          "model.from_hf brings its own"));
  EXPECT_THAT(error_of(y + "  warm_start_checkpoint: runs/x/ckpt\n"),
              StartsWith("relora.warm_start_checkpoint: set together with model.from_hf"));
}

TEST(JobSpec, ModelShapeErrors) {
  std::string y = kMinimal;
  EXPECT_THAT(error_of(y + "model:\n"), HasSubstr("duplicate field 'model'"));
  y.replace(y.find("  preset: nano"), 14, "  preset: 13b");
  EXPECT_THAT(error_of(y), AllOf(StartsWith("model.preset: unknown preset '13b'"), HasSubstr("nano, micro, 60m")));
  y = kMinimal;
  y.replace(y.find("  preset: nano"), 14, "  preset: nano\n  num_heads: 3");
  EXPECT_THAT(error_of(y), StartsWith("model.hidden_size: 128 is not divisible by model.num_heads 3"));
  y = kMinimal;
  y.replace(y.find("  preset: nano"), 14, "  preset: nano\n  num_heads: 128");
  EXPECT_THAT(error_of(y), StartsWith("model.num_heads: head dimension 1"));
}

TEST(JobSpec, UnknownFieldNamesPathAndSuggestion) {
  std::string y = kMinimal;
  y.replace(y.find("  preset: nano"), 14, "  preset: nano\n  hiden_size: 64");
  std::string err = error_of(y);
  EXPECT_THAT(err, StartsWith("job.yaml: unknown field 'model.hiden_size'"));
  EXPECT_THAT(err, HasSubstr("(did you mean 'hidden_size'?)"));
  EXPECT_THAT(err, HasSubstr("line 4"));
  // A field of another section, written in the wrong place.
  EXPECT_THAT(error_of(std::string(kMinimal) + "rank: 8\n"),
              HasSubstr("unknown field 'rank' (did you mean 'relora.rank'?)"));
  EXPECT_THAT(error_of(std::string(kMinimal) + "zzzzzz: 1\n"), HasSubstr("unknown field 'zzzzzz'"));
}

TEST(JobSpec, WrongScalarTypeNamesFieldAndValue) {
  EXPECT_THAT(error_of(std::string(kMinimal) + "  rank: abc\n"),
              StartsWith("job.yaml: relora.rank: expected an integer, got 'abc'"));
  EXPECT_THAT(error_of(std::string(kMinimal) + "  rank: 2.5\n"), HasSubstr("relora.rank: expected an integer"));
  EXPECT_THAT(error_of(std::string(kMinimal) + "  rank: 3000000000\n"), HasSubstr("relora.rank: expected an integer, got '3000000000' (out of range)"));
  EXPECT_THAT(error_of(std::string(kMinimal) + "  alpha: lots\n"), HasSubstr("relora.alpha: expected a number, got 'lots'"));
  EXPECT_THAT(error_of(std::string(kMinimal) + "  lr: [1]\n"), HasSubstr("relora.lr: expected a number, got a list"));
  EXPECT_THAT(error_of(std::string(kMinimal) + "eval: 5\n"), HasSubstr("eval: expected a mapping of fields, got '5'"));
  EXPECT_THAT(error_of("name: a\ndata: {train: [[x]]}\n"), HasSubstr("data.train[0]: expected a string, got a list"));
  // Integers written in float notation and quoted numbers are fine.
  JobSpec s = resolved(with_relora("relora: {cycle_steps: '2.5e2', rank: \"16\"}\n"));
  EXPECT_EQ(s.relora().cycle_steps(), 250);
  EXPECT_EQ(s.relora().rank(), 16);
}

TEST(JobSpec, SingleTrainPathIsAOneElementList) {
  std::string y = kMinimal;
  y.replace(y.find("[corpus.txt]"), 12, "corpus.txt");
  JobSpec s = resolved(y);
  ASSERT_EQ(s.data().train_size(), 1);
  EXPECT_EQ(s.data().train(0), "corpus.txt");
}

TEST(JobSpec, YamlSyntaxErrorMentionsLine) {
  std::string err = error_of("name: x\nmodel:\n  preset: [nano\ndata: {}\n");
  EXPECT_THAT(err, StartsWith("job.yaml:"));
  EXPECT_THAT(err, HasSubstr("YAML syntax error"));
  EXPECT_THAT(err, ::testing::ContainsRegex("job\\.yaml:[0-9]+:"));
  EXPECT_THAT(error_of(""), HasSubstr("job.yaml: the job spec is empty"));
  EXPECT_THAT(error_of("# only a comment\n"), HasSubstr("the job spec is empty"));
  EXPECT_THAT(error_of("- a\n- b\n"), HasSubstr("must be a YAML mapping"));
}

TEST(JobSpec, RequiredFields) {
  EXPECT_THAT(error_of("model: {preset: nano}\ndata: {train: x}\ntraining: {steps: 10}\nrelora: {mode: full}\n"),
              StartsWith("name: required"));
  std::string y = kMinimal;
  y.replace(y.find("  steps: 1000"), 13, "  lr: 0.01");
  EXPECT_THAT(error_of(y), StartsWith("training.steps: required"));
  y = kMinimal;
  y.replace(y.find("  train: [corpus.txt]"), 21, "  train: []");
  EXPECT_THAT(error_of(y), StartsWith("data.train:"));
}

TEST(JobSpec, BadNameAndDtype) {
  std::string y = kMinimal;
  EXPECT_THAT(error_of("name: 'my run/1'\n" + y.substr(y.find("model:"))), StartsWith("name: 'my run/1'"));
  EXPECT_THAT(error_of("name: ..\n" + y.substr(y.find("model:"))), StartsWith("name:"));
  y.replace(y.find("  steps: 1000"), 13, "  steps: 1000\n  dtype: fp16");
  EXPECT_THAT(error_of(y), StartsWith("training.dtype: 'fp16' is not one of fp32, bf16"));
}

TEST(JobSpec, TrainingRanges) {
  auto training = [](const std::string& extra) {
    std::string y = kMinimal;
    return error_of(y.replace(y.find("  steps: 1000"), 13, "  steps: 1000\n  " + extra));
  };
  EXPECT_THAT(training("lr: 0"), StartsWith("training.lr:"));
  EXPECT_THAT(training("lr: .nan"), StartsWith("training.lr:"));
  EXPECT_THAT(training("warmup_steps: 1000"), StartsWith("training.warmup_steps:"));
  EXPECT_THAT(training("adam_beta2: 1"), StartsWith("training.adam_beta2:"));
  EXPECT_THAT(training("micro_batch_size: 0"), StartsWith("training.micro_batch_size:"));
  EXPECT_THAT(training("seed: -1"), HasSubstr("training.seed: expected a non-negative integer"));
}

TEST(JobSpec, RankBounds) {
  EXPECT_THAT(error_of(std::string(kMinimal) + "  rank: 0\n"), StartsWith("relora.rank: 0 must be at least 1"));
  EXPECT_THAT(error_of(std::string(kMinimal) + "  rank: 129\n"),
              StartsWith("relora.rank: 129 is larger than the smallest layer dimension 128"));
  EXPECT_EQ(error_of(std::string(kMinimal) + "  rank: 128\n"), "");
}

TEST(JobSpec, CycleMustDivideLowRankPhase) {
  std::string y = kMinimal;
  y.replace(y.find("  cycle_steps: 250"), 18, "  cycle_steps: 400\n  warm_start_steps: 100");
  EXPECT_EQ(error_of(y), "relora.cycle_steps: 400 does not divide the low-rank phase (1000 - 100 = 900 steps)");
  y.replace(y.find("400"), 3, "450");
  EXPECT_EQ(error_of(y), "");
  EXPECT_EQ(low_rank_phase_steps(resolved(y)), 900);
  EXPECT_THAT(error_of(with_relora("relora: {rank: 8}\n")), StartsWith("relora.cycle_steps: required"));
}

// restart_warmup_steps: 0 is the jagged-schedule ablation (no re-warm after merges); it must stay
// 0 rather than fall back to the default, and negative or cycle-long re-warms are still errors.
TEST(JobSpec, RestartWarmupZeroTurnsTheJaggedScheduleOff) {
  EXPECT_EQ(error_of(with_relora("relora: {cycle_steps: 250, restart_warmup_steps: 0}\n")), "");
  EXPECT_EQ(resolved(with_relora("relora: {cycle_steps: 250, restart_warmup_steps: 0}\n")).relora().restart_warmup_steps(), 0);
  EXPECT_EQ(error_of(with_relora("relora: {cycle_steps: 250, restart_warmup_steps: -1}\n")),
            "relora.restart_warmup_steps: -1 must be in [0, relora.cycle_steps 250) (0: no re-warm after merges)");
  EXPECT_THAT(error_of(with_relora("relora: {cycle_steps: 250, restart_warmup_steps: 250}\n")),
              StartsWith("relora.restart_warmup_steps: 250 must be in [0, relora.cycle_steps 250)"));
}

TEST(JobSpec, WarmupLongerThanCycle) {
  std::string y = kMinimal;
  y.replace(y.find("  steps: 1000"), 13, "  steps: 1000\n  warmup_steps: 600");
  y.replace(y.find("cycle_steps: 250"), 16, "cycle_steps: 500");
  EXPECT_EQ(error_of(y), "training.warmup_steps: 600 is longer than relora.cycle_steps 500");
}

TEST(JobSpec, ContradictoryModeSettingsAreLoud) {
  EXPECT_THAT(error_of(with_relora("relora: {mode: full, cycle_steps: 250}\n")),
              StartsWith("relora.cycle_steps is set but relora.mode is 'full'"));
  EXPECT_THAT(error_of(with_relora("relora: {mode: full, rank: 8}\n")),
              StartsWith("relora.rank is set but relora.mode is 'full'"));
  EXPECT_THAT(error_of(with_relora("relora: {mode: lora, optimizer_reset: magnitude}\n")),
              AllOf(StartsWith("relora.optimizer_reset is set but relora.mode is 'lora'"),
                    HasSubstr("never merges"), HasSubstr("relora.mode: relora")));
  EXPECT_THAT(error_of(with_relora("relora: {mode: lora, cycle_steps: 250}\n")),
              StartsWith("relora.cycle_steps is set but relora.mode is 'lora'"));
  EXPECT_THAT(error_of(with_relora("relora: {mode: qlora}\n")), StartsWith("relora.mode: 'qlora' is not one of"));
  EXPECT_THAT(error_of(with_relora("relora: {mode: lora, warm_start_steps: 10, warm_start_checkpoint: ck}\n")),
              StartsWith("relora.warm_start_steps: set together with relora.warm_start_checkpoint"));
}

TEST(JobSpec, FrozenWeightShardingNeedsALowRankMode) {
  EXPECT_THAT(error_of(with_relora("relora: {mode: full}\ncluster: {workers: 2, shard_frozen_weights: true}\n")),
              AllOf(StartsWith("cluster.shard_frozen_weights: needs relora.mode lora or relora"), HasSubstr("none is frozen")));
  EXPECT_EQ(error_of(with_relora("relora: {mode: lora}\ncluster: {workers: 2, shard_frozen_weights: true}\n")), "");
}

TEST(JobSpec, FullAndLoraModesResolveToValidSpecs) {
  JobSpec full = resolved(with_relora("relora: {mode: full}\n"));
  ASSERT_NO_THROW(validate_job_spec(full));
  EXPECT_FALSE(full.relora().has_rank());
  EXPECT_FALSE(full.relora().has_cycle_steps());
  EXPECT_FALSE(full.relora().has_prune_ratio());
  EXPECT_EQ(low_rank_phase_steps(full), 0);
  // Unset fields must stay unset through JSON, or the round trip would turn "full" invalid.
  JobSpec back = job_spec_from_json(job_spec_to_json(full));
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(full, back));
  EXPECT_NO_THROW(validate_job_spec(back));

  JobSpec lora = resolved(with_relora("relora: {mode: lora}\n"));
  ASSERT_NO_THROW(validate_job_spec(lora));
  EXPECT_EQ(lora.relora().optimizer_reset(), "none");
  EXPECT_FALSE(lora.relora().has_restart_warmup_steps());
  EXPECT_EQ(lora.relora().rank(), 32);
}

TEST(JobSpec, TokenizerVocabMustFitModel) {
  std::string y = kMinimal;
  y.replace(y.find("  train: [corpus.txt]"), 21, "  train: [corpus.txt]\n  tokenizer_vocab_size: 5000");
  EXPECT_THAT(error_of(y), AllOf(StartsWith("data.tokenizer_vocab_size: 5000"),
                                 HasSubstr("model's vocabulary must be at least the tokenizer's")));
}

TEST(JobSpec, LoadFile) {
  testing::TempDir dir;
  {
    std::ofstream(dir.file("job.yaml")) << kMinimal;
  }
  JobSpec s = load_job_spec_file(dir.file("job.yaml"));
  EXPECT_EQ(s.name(), "test-run");
  EXPECT_EQ(s.relora().rank(), 32);

  {
    std::ofstream(dir.file("bad.yaml")) << kMinimal << "  rank: 0\n";
  }
  try {
    load_job_spec_file(dir.file("bad.yaml"));
    FAIL() << "expected an error";
  } catch (const JobSpecError& e) {
    EXPECT_THAT(e.what(), HasSubstr("bad.yaml: relora.rank: 0"));
  }

  try {
    load_job_spec_file(dir.file("missing.yaml"));
    FAIL() << "expected an error";
  } catch (const JobSpecError& e) {
    EXPECT_THAT(e.what(), HasSubstr("missing.yaml: cannot read job spec: No such file or directory"));
  }
  EXPECT_THROW(load_job_spec_file(dir.path()), JobSpecError);  // a directory
}

TEST(JobSpec, FromJsonRejectsUnknownFields) {
  EXPECT_THROW(job_spec_from_json(R"({"name": "x", "bogus": 1})"), JobSpecError);
  EXPECT_THROW(job_spec_from_json("not json"), JobSpecError);
}

// Regressions found by fuzzing (tests/fuzz/fuzz_job_spec, docs/reliability.md "Bad input").
// A number far longer than any real one: the float syntax check was a std::regex, whose
// executor recursed once per character and overflowed the stack (a crash of the CLI, or of the
// coordinator parsing a submitted spec).
TEST(JobSpecFuzzRegression, VeryLongNumbersAreParsedWithoutRecursion) {
  const std::string digits(1000000, '1');
  auto training = [](const std::string& extra) {
    std::string y = kMinimal;
    return y.replace(y.find("  steps: 1000"), 13, "  steps: 1000\n  " + extra);
  };
  EXPECT_EQ(error_of(training("lr: 0." + digits)), "");
  EXPECT_DOUBLE_EQ(resolved(training("lr: 0.000" + digits)).training().lr(), 0.0001111111111111111);
  EXPECT_THAT(error_of(training("lr: " + digits + "x")), HasSubstr("training.lr: expected a number"));
  EXPECT_THAT(error_of(training("log_every_steps: " + digits)), HasSubstr("training.log_every_steps: expected an integer"));
  // The hand-written matcher accepts exactly what the regex did.
  for (const char* ok : {"1", "-1", "+1.5", ".5", "5.", "1e3", "1E-3", "-.5e+2", ".inf", "-.Inf", "+.INF"}) {
    EXPECT_EQ(error_of(training(std::string("adam_eps: ") + ok)).find("expected a number"), std::string::npos) << ok;
  }
  for (const char* bad : {".", "e3", "1e", "1e+", "--1", "0x10", "inf", "nan", "1.2.3", "+", ".e1", "1 2"}) {
    EXPECT_THAT(error_of(training(std::string("adam_eps: '") + bad + "'")), HasSubstr("training.adam_eps: expected a number")) << bad;
  }
}

// A ',' outside a flow collection: yaml-cpp 0.7 reported an empty document and began the next
// at the same ',' forever, so YAML::LoadAll allocated until the process was killed.
TEST(JobSpecFuzzRegression, StrayCommaIsASyntaxErrorNotAnEndlessParse) {
  EXPECT_THAT(error_of(","), HasSubstr("job.yaml:1:1: YAML syntax error: unexpected ','"));
  EXPECT_THAT(error_of(", a: {b: c}"), HasSubstr("job.yaml:1:1: YAML syntax error"));
  EXPECT_THAT(error_of("name: x\n,\n"), HasSubstr("job.yaml:"));
  EXPECT_THAT(error_of("a: 1\n---\nb: 2\n"), HasSubstr("expected one YAML document, found 2"));
}

// Bytes that are not UTF-8 in a string field: the YAML-to-JSON step threw nlohmann's type_error
// (not a JobSpecError, so the CLI and the coordinator's SubmitJob did not report it as a bad spec).
TEST(JobSpecFuzzRegression, InvalidUtf8IsAJobSpecErrorNamingTheField) {
  std::string y = kMinimal;
  EXPECT_THAT(error_of("name: \"run\xf5\"\n" + y.substr(y.find("model:"))),
              HasSubstr("job.yaml: name: expected UTF-8 text"));
  EXPECT_THAT(error_of(y + "  optimizer_reset: \"\xc0\xafx\"\n"), HasSubstr("relora.optimizer_reset: expected UTF-8"));
  EXPECT_THAT(error_of("name: x\nmodel: {preset: nano}\ndata: {train: [\"a\xed\xa0\x80\"]}\ntraining: {steps: 10}\n"),
              HasSubstr("data.train[0]: expected UTF-8"));
  // Real UTF-8 passes through unchanged.
  EXPECT_EQ(resolved("name: x\ndata: {train: [\"d\xc3\xa9j\xc3\xa0/\xf0\x9f\x98\x80.txt\"]}\n").data().train(0),
            "d\xc3\xa9j\xc3\xa0/\xf0\x9f\x98\x80.txt");
}

// A spec is stored by the coordinator and sent to every rank: its paths and lists are bounded.
TEST(JobSpec, PathLengthsAndFileCountsAreBounded) {
  const std::string long_path(5000, 'a');
  EXPECT_THAT(error_of("name: x\nmodel: {preset: nano}\ndata: {train: [" + long_path + "]}\ntraining: {steps: 10}\n"
                       "relora: {mode: full}\n"),
              HasSubstr("data.train[0]: a path of 5000 characters (at most 4096)"));
  EXPECT_THAT(error_of(std::string(kMinimal) + "checkpoint: {dir: " + long_path + "}\n"),
              HasSubstr("characters (at most 4096)"));  // checkpoint.dir, or the cache_dir under it
  std::string many = "name: x\nmodel: {preset: nano}\ntraining: {steps: 10}\nrelora: {mode: full}\ndata: {train: [";
  for (int i = 0; i <= 10000; ++i) many += (i ? ",f" : "f") + std::to_string(i);
  EXPECT_THAT(error_of(many + "]}\n"), HasSubstr("data.train: more than 10000 entries"));
}

}  // namespace
}  // namespace relora

namespace relora {
namespace {

// data.train entries with weights: {path, weight} mappings, plain strings among them weigh 1.
TEST(CommonJobSpec, WeightedTrainEntries) {
  const std::string head = "name: a\nmodel: {preset: nano}\ntraining: {steps: 10}\nrelora: {mode: full}\n";
  JobSpec spec = resolved(head + "data:\n  train: [{path: a/, weight: 0.7}, b.jsonl.zst, {path: c, weight: 2}]\n");
  ASSERT_NO_THROW(validate_job_spec(spec));
  ASSERT_EQ(spec.data().train_size(), 3);
  EXPECT_EQ(spec.data().train(1), "b.jsonl.zst");
  ASSERT_EQ(spec.data().train_weights_size(), 3);
  EXPECT_DOUBLE_EQ(spec.data().train_weights(0), 0.7);
  EXPECT_DOUBLE_EQ(spec.data().train_weights(1), 1.0);
  EXPECT_DOUBLE_EQ(spec.data().train_weights(2), 2.0);
  // Round trip through the JSON form (what the coordinator stores) keeps them.
  JobSpec back = job_spec_from_json(job_spec_to_json(spec));
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(spec, back));
  // Plain lists keep no weights: one stream, as always.
  EXPECT_EQ(resolved(head + "data: {train: [a, b]}\n").data().train_weights_size(), 0);

  EXPECT_THAT(error_of(head + "data: {train: [{path: a, weight: 0}]}\n"), StartsWith("data.train[0].weight: "));
  EXPECT_THAT(error_of(head + "data: {train: [{path: a, weight: lots}]}\n"), HasSubstr("data.train[0].weight: expected a number"));
  EXPECT_THAT(error_of(head + "data: {train: [{weight: 1}]}\n"), HasSubstr("data.train[0]: missing path"));
  EXPECT_THAT(error_of(head + "data: {train: [{path: a, wieght: 1}]}\n"), HasSubstr("unknown or malformed field 'wieght'"));
  EXPECT_THAT(error_of(head + "data: {train: [a, b], train_weights: [1]}\n"),
              StartsWith("data.train_weights: 1 weights for 2"));
}

}  // namespace
}  // namespace relora
