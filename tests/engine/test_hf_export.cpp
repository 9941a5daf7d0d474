// The FP16 HF export (`qgate quantize --method fp16`) of the real GGUF model: the directory it
// writes loads through qgate's HF path into the same model — config, tokenizer, chat template and
// logits — with Q/K rows back in HF order; plus the directory-level failure modes.
// What other readers make of the directory (tokenizers, safetensors, the gguf package's
// dequantization) is checked in tests/python/test_fp16_export.py.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "engine/hf_export.h"
#include "engine/llama_model.h"
#include "engine/safetensors.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/quant.h"
#include "kernels/cpu/thread_pool.h"
#include "tests/engine/model_fixture.h"

namespace qgate {
namespace {

namespace fs = std::filesystem;

// This process's own folder of the test temp dir; exports are ~270 MB each, so it is removed when
// the test binary finishes.
fs::path scratch_root() {
  return fs::path(::testing::TempDir()) / ("qgate_hf_export_" + std::to_string(::getpid()));
}

class RemoveScratch : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(scratch_root(), ec);
  }
};
[[maybe_unused]] ::testing::Environment* const kRemoveScratch =
    ::testing::AddGlobalTestEnvironment(new RemoveScratch);

// A fresh directory per name under scratch_root().
fs::path scratch(const std::string& name) {
  const fs::path p = scratch_root() / name;
  fs::remove_all(p);
  fs::create_directories(p.parent_path());
  return p;
}

// Names in `dir` that an export left behind (temporaries and set-aside old directories).
std::vector<std::string> leftovers(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.find(".tmp-") != std::string::npos || n.find(".old-") != std::string::npos)
      out.push_back(n);
  }
  return out;
}

struct Exported {
  fs::path dir;
  LoadedModel hf;
};

// The real model exported once per test binary; nullptr when the GGUF is absent.
const Exported* exported() {
  static const Exported* e = []() -> const Exported* {
    if (!fs::exists(testing::model_path())) return nullptr;
    auto* out = new Exported{scratch("smollm2-fp16"), {}};
    Status st = export_hf_fp16(testing::model_path(), out->dir.string());
    if (!st.ok()) {
      ADD_FAILURE() << st.error().to_string();
      return nullptr;
    }
    auto loaded = load_model(out->dir.string());
    if (!loaded.ok()) {
      ADD_FAILURE() << loaded.error().to_string();
      return nullptr;
    }
    out->hf = std::move(loaded).value();
    return out;
  }();
  return e;
}

#define REQUIRE_EXPORT()                                         \
  QGATE_REQUIRE_MODEL();                                         \
  const Exported* exp_ = exported();                             \
  ASSERT_NE(exp_, nullptr) << "export of the real model failed"; \
  const LoadedModel& hf_ = exp_->hf

TEST(HfExport, ConfigEqualsTheGgufOneExceptRopeStyle) {
  REQUIRE_EXPORT();
  const LlamaConfig& g = model_->model->config();
  const LlamaConfig& h = hf_.model->config();
  EXPECT_EQ(h.architecture, g.architecture);
  EXPECT_EQ(h.vocab_size, g.vocab_size);
  EXPECT_EQ(h.hidden_size, g.hidden_size);
  EXPECT_EQ(h.num_layers, g.num_layers);
  EXPECT_EQ(h.num_heads, g.num_heads);
  EXPECT_EQ(h.num_kv_heads, g.num_kv_heads);
  EXPECT_EQ(h.head_dim, g.head_dim);
  EXPECT_EQ(h.intermediate_size, g.intermediate_size);
  EXPECT_EQ(h.max_position_embeddings, g.max_position_embeddings);
  EXPECT_EQ(h.rms_norm_eps, g.rms_norm_eps);  // exact: written as the float's shortest decimal
  EXPECT_EQ(h.rope_theta, g.rope_theta);
  EXPECT_EQ(h.tie_word_embeddings, g.tie_word_embeddings);
  EXPECT_EQ(h.attention_bias, g.attention_bias);
  // GGUF Llama Q/K rows are interleaved for adjacent-pair RoPE; the export restores HF's layout.
  EXPECT_EQ(g.rope_style, RopeStyle::kAdjacentPairs);
  EXPECT_EQ(h.rope_style, RopeStyle::kHalves);
}

TEST(HfExport, SafetensorsHoldsEveryWeightAsFp16UnderHfNames) {
  REQUIRE_EXPORT();
  auto f = SafetensorsFile::open((exp_->dir / "model.safetensors").string());
  ASSERT_TRUE(f.ok()) << f.error().to_string();
  const LlamaConfig& c = hf_.model->config();
  EXPECT_EQ(f->metadata().at("format"), "pt");  // transformers refuses files without it
  EXPECT_EQ(f->tensors().size(), static_cast<size_t>(2 + 9 * c.num_layers));  // tied: no lm_head
  EXPECT_EQ(f->find("lm_head.weight"), nullptr);
  for (const SafetensorsTensor& t : f->tensors())
    EXPECT_EQ(t.dtype, SafetensorsDType::kF16) << t.name;
  auto shape = [&](const std::string& name) {
    const SafetensorsTensor* t = f->find(name);
    return t == nullptr ? std::vector<int64_t>{-1} : t->shape;
  };
  const int64_t h = c.hidden_size, kv = c.kv_dim(), ff = c.intermediate_size;
  EXPECT_EQ(shape("model.embed_tokens.weight"), (std::vector<int64_t>{c.vocab_size, h}));
  EXPECT_EQ(shape("model.norm.weight"), (std::vector<int64_t>{h}));
  const std::string p = "model.layers.29.";
  EXPECT_EQ(shape(p + "input_layernorm.weight"), (std::vector<int64_t>{h}));
  EXPECT_EQ(shape(p + "post_attention_layernorm.weight"), (std::vector<int64_t>{h}));
  EXPECT_EQ(shape(p + "self_attn.q_proj.weight"), (std::vector<int64_t>{c.q_dim(), h}));
  EXPECT_EQ(shape(p + "self_attn.k_proj.weight"), (std::vector<int64_t>{kv, h}));
  EXPECT_EQ(shape(p + "self_attn.v_proj.weight"), (std::vector<int64_t>{kv, h}));
  EXPECT_EQ(shape(p + "self_attn.o_proj.weight"), (std::vector<int64_t>{h, c.q_dim()}));
  EXPECT_EQ(shape(p + "mlp.gate_proj.weight"), (std::vector<int64_t>{ff, h}));
  EXPECT_EQ(shape(p + "mlp.up_proj.weight"), (std::vector<int64_t>{ff, h}));
  EXPECT_EQ(shape(p + "mlp.down_proj.weight"), (std::vector<int64_t>{h, ff}));
}

// Each HF row must be the fp16 rounding of the dequantized GGUF row that llama.cpp's converter
// moved there: GGUF row hd·head + 2i + p ← HF row hd·head + p·hd/2 + i. Other matrices keep their
// row order.
TEST(HfExport, QkRowsAreUnpermutedAndEveryValueIsTheFp16OfTheDequantizedOne) {
  REQUIRE_EXPORT();
  auto gguf = GgufFile::open(testing::model_path());
  ASSERT_TRUE(gguf.ok());
  auto f = SafetensorsFile::open((exp_->dir / "model.safetensors").string());
  ASSERT_TRUE(f.ok());
  const int64_t hd = hf_.model->config().head_dim;
  struct Pair {
    const char* gguf;
    const char* hf;
    bool permuted;
  };
  for (int layer : {0, 17, 29}) {
    const std::string g = "blk." + std::to_string(layer) + ".";
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    for (const Pair& pr : {Pair{"attn_q.weight", "self_attn.q_proj.weight", true},
                           Pair{"attn_k.weight", "self_attn.k_proj.weight", true},
                           Pair{"attn_v.weight", "self_attn.v_proj.weight", false},
                           Pair{"ffn_down.weight", "mlp.down_proj.weight", false},
                           Pair{"attn_norm.weight", "input_layernorm.weight", false}}) {
      const GgufTensorInfo* gt = gguf->find_tensor(g + pr.gguf);
      const SafetensorsTensor* ht = f->find(p + pr.hf);
      ASSERT_TRUE(gt != nullptr && ht != nullptr) << pr.hf;
      const int64_t cols = gt->dims[0];
      const int64_t rows = gt->num_elements() / cols;
      const int64_t row_bytes = *dtype_row_bytes(gt->type, cols);
      std::vector<float> row(static_cast<size_t>(cols));
      int64_t mismatches = 0;
      for (int64_t r = 0; r < rows; ++r) {
        dequantize_row(gt->type, gt->data + r * row_bytes, row.data(), cols);
        const int64_t head = r / hd, i = (r % hd) / 2, parity = r % 2;
        const int64_t dst = pr.permuted ? head * hd + parity * (hd / 2) + i : r;
        for (int64_t j = 0; j < cols; ++j) {
          uint16_t stored;
          std::memcpy(&stored, ht->data + 2 * (dst * cols + j), 2);
          mismatches += stored != fp32_to_fp16(row[static_cast<size_t>(j)]);
        }
      }
      EXPECT_EQ(mismatches, 0) << p + pr.hf;
    }
  }
}

std::vector<std::string> sample_texts() {
  return {"",
          "Hello world",
          "Hello, world! How are you today?",
          " leading space",
          "trailing space ",
          "  two  spaces   three",
          "tabs\tand\nnewlines\n\n\r\n",
          "The year 2024 had 366 days; pi ≈ 3.14159.",
          "1234567890",
          "phone: +1 (555) 010-9999",
          "don't won't I'm you're they've we'll she'd",
          "DON'T SHOUT",
          "naïve café résumé",
          "Straße über Äpfel",
          "日本語のテキスト",
          "中文和English混合",
          "Привет, мир!",
          "مرحبا بالعالم",
          "emoji 🤗🚀 and 👩‍👩‍👧",
          "code: def f(x):\n    return x**2  # square",
          "{\"json\": [1, 2, 3], \"ok\": true}",
          "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
          "text<|im_end|>more<|endoftext|>",
          "<|im_start|><|im_start|>",
          "<repo_name>qgate<file_sep>main.cpp",
          "partial <|im_start and im_end|>",
          "a",
          "!!!???...",
          "https://example.com/path?q=1&r=2#frag",
          "x = [i for i in range(10) if i % 2 == 0]",
          "\xe2\x80\x8bzero width",
          "mixed123numbers456and789letters",
          "    indented\n        more",
          "The quick brown fox jumps over the lazy dog.",
          "SELECT * FROM users WHERE id = 42;",
          "¿Qué tal? ¡Muy bien!"};
}

TEST(HfExport, TokenizerJsonEncodesLikeTheGgufTokenizer) {
  REQUIRE_EXPORT();
  const Tokenizer& g = *model_->tokenizer;
  const Tokenizer& h = *hf_.tokenizer;
  EXPECT_EQ(h.vocab_size(), g.vocab_size());
  EXPECT_EQ(h.pre_tokenizer(), g.pre_tokenizer());
  EXPECT_EQ(h.bos_id(), g.bos_id());
  EXPECT_EQ(h.eos_id(), g.eos_id());
  EXPECT_EQ(h.stop_ids(), g.stop_ids());
  EXPECT_EQ(h.add_bos(), g.add_bos());
  for (int32_t id = 0; id < g.vocab_size(); ++id) {
    ASSERT_EQ(h.token_bytes(id), g.token_bytes(id)) << id;
    ASSERT_EQ(h.is_special(id), g.is_special(id)) << id;
  }
  for (const std::string& text : sample_texts()) {
    for (bool parse_special : {true, false}) {
      const std::vector<int32_t> ids = g.encode(text, parse_special);
      EXPECT_EQ(h.encode(text, parse_special), ids) << "'" << text << "' special=" << parse_special;
      EXPECT_EQ(h.decode(ids), text);
    }
  }
}

TEST(HfExport, ChatTemplateRendersIdentically) {
  REQUIRE_EXPORT();
  const std::vector<std::vector<ChatMessage>> chats = {
      {{"user", "Hi there"}},
      {{"system", "Be terse."}, {"user", "What is 2+2?"}},
      {{"user", "Hello"}, {"assistant", "Hi! How can I help?"}, {"user", "Tell me a joke."}},
  };
  for (const auto& chat : chats) {
    for (bool gen : {true, false}) {
      auto a = model_->chat_template.render(chat, gen);
      auto b = hf_.chat_template.render(chat, gen);
      ASSERT_TRUE(a.ok() && b.ok());
      EXPECT_EQ(b.value(), a.value());
    }
  }
  EXPECT_EQ(hf_.chat_template.default_system(), model_->chat_template.default_system());
}

// The HF FP16 model computes what the GGUF model computes up to fp16 rounding of the weights.
// Reference matmuls on both sides keep the int8 activation rounding of the fast kernels out of it.
TEST(HfExport, LogitsMatchTheGgufModelUpToFp16Rounding) {
  REQUIRE_EXPORT();
  const std::vector<std::string> prompts = {
      "The capital of France is",
      "<|im_start|>user\nWrite a haiku about rain.<|im_end|>\n<|im_start|>assistant\n",
      "def fibonacci(n):\n    if n < 2:\n        return n",
  };
  ThreadPool pool(2);
  const int64_t vocab = model_->model->config().vocab_size;
  double worst_ratio = 0;
  for (const std::string& prompt : prompts) {
    const std::vector<int32_t> tokens = model_->tokenizer->encode(prompt);
    ASSERT_EQ(hf_.tokenizer->encode(prompt), tokens);
    const int64_t n = static_cast<int64_t>(tokens.size());
    auto run = [&](const LlamaModel& m) {
      KvCache cache(m.config(), n);
      ForwardScratch scratch;
      scratch.reference_matmul = true;
      std::vector<float> logits(static_cast<size_t>(n * vocab));
      Status st = m.forward(tokens, cache, scratch, pool, LogitsMode::kAll, logits);
      EXPECT_TRUE(st.ok()) << st.error().to_string();
      return logits;
    };
    const std::vector<float> a = run(*model_->model);
    const std::vector<float> b = run(*hf_.model);
    for (int64_t t = 0; t < n; ++t) {
      std::span<const float> ra(a.data() + t * vocab, static_cast<size_t>(vocab));
      std::span<const float> rb(b.data() + t * vocab, static_cast<size_t>(vocab));
      const double mean = std::accumulate(ra.begin(), ra.end(), 0.0) / static_cast<double>(vocab);
      double var = 0, max_d = 0;
      for (int64_t v = 0; v < vocab; ++v) {
        var += (ra[v] - mean) * (ra[v] - mean);
        max_d = std::max(max_d, static_cast<double>(std::fabs(ra[v] - rb[v])));
      }
      const double sd = std::sqrt(var / static_cast<double>(vocab));
      worst_ratio = std::max(worst_ratio, max_d / sd);
      EXPECT_LE(max_d, 2e-2 * sd) << "prompt '" << prompt << "' position " << t;
      EXPECT_EQ(std::max_element(rb.begin(), rb.end()) - rb.begin(),
                std::max_element(ra.begin(), ra.end()) - ra.begin())
          << "prompt '" << prompt << "' position " << t;
    }
  }
  RecordProperty("max_abs_diff_over_logit_std", std::to_string(worst_ratio));
  std::printf("FP16 export vs GGUF: worst max|d logits| / std(logits) = %.3g\n", worst_ratio);
}

TEST(HfExport, HfDirectoryReExportsToTheSameWeights) {
  REQUIRE_EXPORT();
  const fs::path out = scratch("reexport");
  std::vector<size_t> seen;
  Status st = export_hf_fp16(exp_->dir.string(), out.string(), {},
                             [&](std::string_view, size_t done, size_t total) {
                               seen.push_back(done);
                               EXPECT_EQ(total, 272u);
                             });
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_EQ(seen.size(), 272u);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  auto bytes = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  // F16 in, F16 out, same deterministic layout: the weight file is byte-identical.
  EXPECT_TRUE(bytes(out / "model.safetensors") == bytes(exp_->dir / "model.safetensors"));
  EXPECT_EQ(bytes(out / "tokenizer.json"), bytes(exp_->dir / "tokenizer.json"));
  auto again = load_model(out.string());
  ASSERT_TRUE(again.ok()) << again.error().to_string();
  EXPECT_EQ(again->tokenizer->encode("Hello 123"), hf_.tokenizer->encode("Hello 123"));
}

// ---- the directory: refusal, replacement and write failures ----------------------------------

TEST(HfExport, RefusesAnExistingDirectoryWithoutOverwriteAndReplacesItWithOverwrite) {
  QGATE_REQUIRE_MODEL();
  const fs::path out = scratch("existing");
  fs::create_directories(out);
  std::ofstream(out / "keep.txt") << "precious";
  Status st = export_hf_fp16(testing::model_path(), out.string());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(st.error().message().find("already exists"), std::string::npos) << st.error().message();
  EXPECT_TRUE(fs::exists(out / "keep.txt"));
  // A trailing slash names the same directory.
  EXPECT_FALSE(export_hf_fp16(testing::model_path(), out.string() + "/").ok());

  HfExportOptions overwrite;
  overwrite.overwrite = true;
  st = export_hf_fp16(testing::model_path(), out.string(), overwrite);
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_FALSE(fs::exists(out / "keep.txt"));
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
  EXPECT_TRUE(load_model(out.string()).ok());
  EXPECT_TRUE(leftovers(out.parent_path()).empty());
}

TEST(HfExport, NeverReplacesAFileOrTheDirectoryHoldingTheSource) {
  QGATE_REQUIRE_MODEL();
  HfExportOptions overwrite;
  overwrite.overwrite = true;
  const fs::path file = scratch("a-file");
  std::ofstream(file) << "not a directory";
  Status st = export_hf_fp16(testing::model_path(), file.string(), overwrite);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(fs::is_regular_file(file));

  // Exporting into the directory that holds the source would delete the source.
  const fs::path dir = scratch("holds-source");
  fs::create_directories(dir);
  std::ofstream(dir / "model.gguf") << "stand-in";
  st = export_hf_fp16((dir / "model.gguf").string(), dir.string(), overwrite);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(st.error().message().find("holds the source"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir / "model.gguf"));
}

TEST(HfExport, UnwritableDestinationIsAClearIoErrorAndLeavesNothingBehind) {
  QGATE_REQUIRE_MODEL();
  // /proc refuses new entries even to root.
  Status st = export_hf_fp16(testing::model_path(), "/proc/qgate-export-test/out");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kIo);
  EXPECT_NE(st.error().message().find("/proc/qgate-export-test"), std::string::npos)
      << st.error().message();

  // A parent that is a regular file.
  const fs::path file = scratch("plain-file");
  std::ofstream(file) << "x";
  st = export_hf_fp16(testing::model_path(), (file / "out").string());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kIo);
  EXPECT_NE(st.error().message().find(file.string()), std::string::npos) << st.error().message();
  EXPECT_TRUE(leftovers(file.parent_path()).empty());
}

TEST(HfExport, SourceErrorsAreReportedBeforeAnythingIsWritten) {
  const fs::path missing = scratch("missing-source.gguf");
  const fs::path out = scratch("never-written");
  Status st = export_hf_fp16(missing.string(), out.string());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), ErrorCode::kNotFound);

  const fs::path junk = scratch("junk.gguf");
  std::ofstream(junk) << "definitely not a GGUF file";
  st = export_hf_fp16(junk.string(), out.string());
  EXPECT_FALSE(st.ok());
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(leftovers(out.parent_path()).empty());
}

}  // namespace
}  // namespace qgate
