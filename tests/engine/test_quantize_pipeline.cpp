// qgate quantize end to end on the real model: RTN, GPTQ (with and without act-order) and AWQ
// checkpoints load through load_model and stay close to the GGUF model. Calibration is kept tiny
// (4 windows of 32 tokens) so the tests run in minutes on 2 cores; quality at the default
// settings is measured with `qgate eval`, not here.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/hf_loader.h"
#include "engine/model_loader.h"
#include "engine/quant_formats.h"
#include "engine/quantize_pipeline.h"
#include "kernels/cpu/thread_pool.h"
#include "tests/engine/model_fixture.h"

namespace qgate {
namespace {

namespace fs = std::filesystem;

// Prose for the agreement check (not from the corpus: eval.txt is never used here).
constexpr const char* kProse =
    "The village sat at the edge of a wide valley, where the river slowed and spread into "
    "shallow pools. Every morning the baker opened his shop before sunrise, and the smell of "
    "fresh bread drifted down the narrow streets toward the old stone bridge.";

std::string calib_path(const fs::path& scratch) {
  const std::string real = testing::model_dir() + "/corpus/calib.txt";
  if (fs::exists(real)) return real;
  // A small synthetic text when the corpus has not been fetched.
  const fs::path p = scratch / "calib.txt";
  std::ofstream f(p);
  for (int i = 0; i < 40; ++i) {
    f << "Section " << i << ". A package is a collection of files that the system installs, "
      << "upgrades and removes as one unit. The maintainer describes its dependencies, and the "
      << "tools check them before anything is changed on the machine.\n";
  }
  return p.string();
}

class QuantizePipelineTest : public ::testing::Test {
 protected:
  static fs::path scratch() {
    static const fs::path dir = [] {
      fs::path d = fs::temp_directory_path() / ("qgate_quant_pipe_" + std::to_string(::getpid()));
      fs::create_directories(d);
      return d;
    }();
    return dir;
  }

  static QuantizeOptions options(QuantizeMethod method, const std::string& out) {
    QuantizeOptions o;
    o.input = testing::model_path();
    o.output = (scratch() / out).string();
    o.method = method;
    o.calib_file = calib_path(scratch());
    o.calib_samples = 4;
    o.calib_seqlen = 32;
    o.seed = 7;
    o.threads = 2;
    o.overwrite = true;
    return o;
  }

  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(scratch(), ec);
  }
};

std::vector<int32_t> greedy(const LoadedModel& m, const std::vector<int32_t>& prompt, int n) {
  ThreadPool pool(2);
  KvCache cache(m.model->config(), 512);
  ForwardScratch scratch;
  std::vector<float> logits(static_cast<size_t>(m.model->config().vocab_size));
  std::vector<int32_t> out;
  std::vector<int32_t> next = prompt;
  for (int i = 0; i < n; ++i) {
    EXPECT_TRUE(m.model->forward(next, cache, scratch, pool, LogitsMode::kLast, logits).ok());
    const int32_t id =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    const auto& stops = m.tokenizer->stop_ids();
    if (std::find(stops.begin(), stops.end(), id) != stops.end()) break;
    out.push_back(id);
    next = {id};
  }
  return out;
}

std::string answer(const LoadedModel& m, const std::string& question) {
  const std::vector<ChatMessage> msgs = {{"user", question}};
  auto text = m.chat_template.render(msgs);
  EXPECT_TRUE(text.ok());
  return m.tokenizer->decode(greedy(m, m.tokenizer->encode(*text, true), 24), true);
}

// Fraction of positions where both models' most likely next token agrees.
double top1_agreement(const LoadedModel& a, const LoadedModel& b, const std::vector<int32_t>& t) {
  auto all_logits = [&t](const LoadedModel& m) {
    ThreadPool pool(2);
    KvCache cache(m.model->config(), 512);
    ForwardScratch scratch;
    std::vector<float> l(t.size() * static_cast<size_t>(m.model->config().vocab_size));
    EXPECT_TRUE(m.model->forward(t, cache, scratch, pool, LogitsMode::kAll, l).ok());
    return l;
  };
  const std::vector<float> la = all_logits(a), lb = all_logits(b);
  const size_t v = static_cast<size_t>(a.model->config().vocab_size);
  int agree = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    const auto ba = la.begin() + i * v, bb = lb.begin() + i * v;
    agree += (std::max_element(ba, ba + v) - ba) == (std::max_element(bb, bb + v) - bb);
  }
  return static_cast<double>(agree) / static_cast<double>(t.size());
}

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Quantizes, loads, and checks agreement with the GGUF model on 30+ positions of prose.
void check_variant(const LoadedModel& base, const QuantizeOptions& o, double min_agreement) {
  auto r = quantize_model(o);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  auto m = load_model(o.output);
  ASSERT_TRUE(m.ok()) << m.error().to_string();
  std::vector<int32_t> tokens = base.tokenizer->encode(kProse, false);
  ASSERT_GE(tokens.size(), 30u);
  const double agree = top1_agreement(base, *m, tokens);
  std::printf("[%s] top-1 agreement with GGUF: %.3f over %zu positions\n",
              quantize_method_name(o.method), agree, tokens.size());
  EXPECT_GE(agree, min_agreement);
  auto cfg_text = read_text_file(o.output + "/config.json");
  ASSERT_TRUE(cfg_text.ok());
  auto cfg = parse_quant_config(*cfg_text);
  ASSERT_TRUE(cfg.ok()) << cfg.error().to_string();
  EXPECT_EQ(cfg->bits, o.bits);
  EXPECT_EQ(cfg->group_size, o.group_size);
  EXPECT_EQ(cfg->method, o.method == QuantizeMethod::kAwq ? QuantMethod::kAwq : QuantMethod::kGptq);
  if (o.method == QuantizeMethod::kAwq) {
    EXPECT_TRUE(cfg->zero_point);
  } else {
    EXPECT_EQ(cfg->sym, o.sym);
    EXPECT_EQ(cfg->desc_act, o.desc_act);
    EXPECT_EQ(cfg->checkpoint_format, GptqCheckpointFormat::kGptqV2);
  }
  EXPECT_TRUE(fs::exists(o.output + "/tokenizer.json"));
  EXPECT_TRUE(fs::exists(o.output + "/qgate_quantize.json"));
}

TEST(QuantizePipelineUnit, Sha256KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(QuantizePipelineUnit, CalibrationWindowsAreSeededAndInRange) {
  std::vector<int32_t> tokens(1000);
  for (int i = 0; i < 1000; ++i) tokens[i] = i;
  auto a = draw_calibration_windows(tokens, 5, 100, 42);
  auto b = draw_calibration_windows(tokens, 5, 100, 42);
  auto c = draw_calibration_windows(tokens, 5, 100, 43);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_NE(*a, *c);
  ASSERT_EQ(a->size(), 500u);
  for (int s = 0; s < 5; ++s) {  // each window is a contiguous run of the text
    for (int j = 1; j < 100; ++j) EXPECT_EQ((*a)[s * 100 + j], (*a)[s * 100] + j);
  }
  EXPECT_FALSE(draw_calibration_windows(tokens, 1, 1001, 0).ok());
}

TEST(QuantizePipelineUnit, OptionChecks) {
  QuantizeOptions o;
  o.input = "x";
  o.output = "y";
  o.calib_file = "c";
  o.method = QuantizeMethod::kAwq;
  o.desc_act = true;
  EXPECT_FALSE(check_quantize_options(o).ok());
  o.method = QuantizeMethod::kGptq;
  EXPECT_TRUE(check_quantize_options(o).ok());
  o.calib_file.clear();
  EXPECT_FALSE(check_quantize_options(o).ok());
  o.method = QuantizeMethod::kRtn;
  o.desc_act = false;
  o.bits = 3;
  EXPECT_FALSE(check_quantize_options(o).ok());
  EXPECT_FALSE(parse_quantize_method("gguf").ok());
  EXPECT_EQ(*parse_quantize_method("awq"), QuantizeMethod::kAwq);
}

TEST_F(QuantizePipelineTest, AwqGroup128IsRefusedNaming576) {
  QGATE_REQUIRE_MODEL();
  QuantizeOptions o = options(QuantizeMethod::kAwq, "awq128");
  o.group_size = 128;
  auto r = quantize_model(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("576"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("q_proj"), std::string::npos) << r.error().message();
  EXPECT_FALSE(fs::exists(o.output));
}

TEST_F(QuantizePipelineTest, RtnAnswersAndIsDeterministic) {
  QGATE_REQUIRE_MODEL();
  QuantizeOptions o = options(QuantizeMethod::kRtn, "rtn");
  check_variant(*model_, o, 0.6);  // measured 0.69 (33/48)
  auto m = load_model(o.output);
  ASSERT_TRUE(m.ok());
  const std::string a = answer(*m, "What is 2 + 2?");
  // The GGUF model says "The answer is 4."; the RTN variant "Two and two is four."
  EXPECT_TRUE(a.find('4') != std::string::npos || a.find("four") != std::string::npos) << a;
  const std::string first = read_all(o.output + "/model.safetensors");
  QuantizeOptions o2 = options(QuantizeMethod::kRtn, "rtn2");
  ASSERT_TRUE(quantize_model(o2).ok());
  EXPECT_TRUE(first == read_all(o2.output + "/model.safetensors"));
  // Without --overwrite an existing output is refused and left alone.
  o2.overwrite = false;
  EXPECT_FALSE(quantize_model(o2).ok());
  EXPECT_TRUE(first == read_all(o2.output + "/model.safetensors"));
}

TEST_F(QuantizePipelineTest, GptqLoadsAndAgrees) {
  QGATE_REQUIRE_MODEL();
  // Measured 0.56 (27/48): with 128 calibration tokens the Hessian has rank <= 128 of 576, so
  // GPTQ fits the calibration windows and does no better than RTN here (0.69); the defaults
  // (64 x 256 tokens) are what quality is measured with.
  check_variant(*model_, options(QuantizeMethod::kGptq, "gptq"), 0.5);
}

TEST_F(QuantizePipelineTest, GptqActOrderLoadsAndAgrees) {
  QGATE_REQUIRE_MODEL();
  QuantizeOptions o = options(QuantizeMethod::kGptq, "gptq_act");
  o.desc_act = true;
  check_variant(*model_, o, 0.5);  // measured 0.65 (31/48)
  // q/k/v (and gate/up) share their input, so act-order gives them one permutation; the loader
  // shares it, which lets the forward pass permute and quantize that input once for all three.
  auto m = load_model(o.output);
  ASSERT_TRUE(m.ok()) << m.error().to_string();
  for (const LlamaLayer& l : m->model->layers()) {
    ASSERT_NE(l.q.input_perm, nullptr);
    EXPECT_EQ(l.k.input_perm, l.q.input_perm);
    EXPECT_EQ(l.v.input_perm, l.q.input_perm);
    ASSERT_NE(l.gate.input_perm, nullptr);
    EXPECT_EQ(l.up.input_perm, l.gate.input_perm);
    EXPECT_NE(l.o.input_perm, l.q.input_perm);
  }
}

TEST_F(QuantizePipelineTest, AwqGroup64LoadsAndAgrees) {
  QGATE_REQUIRE_MODEL();
  QuantizeOptions o = options(QuantizeMethod::kAwq, "awq64");
  o.group_size = 64;
  o.awq_grid = 5;  // the search's cost is per grid point; the full grid is exercised by the CLI
  check_variant(*model_, o, 0.6);  // measured 0.77 (37/48)
}

}  // namespace
}  // namespace qgate
