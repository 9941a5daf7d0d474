#include "engine/hf_export.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc, _GNU_SOURCE)
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <utility>
#include <vector>

#include "engine/gguf.h"
#include "engine/hf_loader.h"
#include "engine/model_config.h"
#include "engine/safetensors_writer.h"
#include "engine/tokenizer.h"
#include "engine/tokenizer_json.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/quant.h"

namespace qgate {

namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

Error io_error(const std::string& what, const std::string& path, int err) {
  return make_error(ErrorCode::kIo, "export: " + what + " '" + path + "': " + std::strerror(err));
}

// ---- tensors --------------------------------------------------------------------------------

// One output tensor: its HF name and shape, where it comes from in a GGUF, and for Llama Q/K the
// number of heads whose rows llama.cpp interleaved (0: rows are stored as HF has them).
struct TensorSpec {
  std::string hf_name;
  std::string gguf_name;
  std::vector<int64_t> shape;
  int64_t permuted_heads = 0;
};

std::vector<TensorSpec> tensor_specs(const LlamaConfig& c, bool gguf_permutes_qk) {
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), ff = c.intermediate_size;
  std::vector<TensorSpec> s;
  s.push_back({"model.embed_tokens.weight", "token_embd.weight", {c.vocab_size, h}});
  s.push_back({"model.norm.weight", "output_norm.weight", {h}});
  if (!c.tie_word_embeddings) s.push_back({"lm_head.weight", "output.weight", {c.vocab_size, h}});
  const int64_t q_heads = gguf_permutes_qk ? c.num_heads : 0;
  const int64_t k_heads = gguf_permutes_qk ? c.num_kv_heads : 0;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const std::string g = "blk." + std::to_string(i) + ".";
    s.push_back({p + "input_layernorm.weight", g + "attn_norm.weight", {h}});
    s.push_back({p + "post_attention_layernorm.weight", g + "ffn_norm.weight", {h}});
    s.push_back({p + "self_attn.q_proj.weight", g + "attn_q.weight", {q, h}, q_heads});
    s.push_back({p + "self_attn.k_proj.weight", g + "attn_k.weight", {kv, h}, k_heads});
    s.push_back({p + "self_attn.v_proj.weight", g + "attn_v.weight", {kv, h}});
    s.push_back({p + "self_attn.o_proj.weight", g + "attn_output.weight", {h, q}});
    s.push_back({p + "mlp.gate_proj.weight", g + "ffn_gate.weight", {ff, h}});
    s.push_back({p + "mlp.up_proj.weight", g + "ffn_up.weight", {ff, h}});
    s.push_back({p + "mlp.down_proj.weight", g + "ffn_down.weight", {h, ff}});
    if (c.attention_bias) {
      // A bias is permuted with the rows of its weight.
      s.push_back({p + "self_attn.q_proj.bias", g + "attn_q.bias", {q}, q_heads});
      s.push_back({p + "self_attn.k_proj.bias", g + "attn_k.bias", {kv}, k_heads});
      s.push_back({p + "self_attn.v_proj.bias", g + "attn_v.bias", {kv}});
    }
  }
  return s;
}

// GGUF row h·d + 2i + p holds HF row h·d + p·d/2 + i (llama.cpp convert_hf_to_gguf.py permute()).
int64_t hf_row_of(int64_t gguf_row, int64_t head_dim) {
  const int64_t head = gguf_row / head_dim, r = gguf_row % head_dim;
  return head * head_dim + (r % 2) * (head_dim / 2) + r / 2;
}

// Converts `n` floats to fp16 at `dst`; fails rather than silently writing infinities.
Status to_fp16(const float* src, int64_t n, std::byte* dst, const std::string& name) {
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = fp32_to_fp16(src[i]);
    if ((h & 0x7C00) == 0x7C00 && std::isfinite(src[i])) {
      return make_error(ErrorCode::kOutOfRange, "export: tensor " + name + " holds " +
                                                    std::to_string(src[i]) +
                                                    ", beyond the fp16 range");
    }
    std::memcpy(dst + 2 * i, &h, 2);
  }
  return Status::Ok();
}

bool dequantizable(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ8_0:
      return true;
    default:
      return false;
  }
}

Result<std::vector<std::byte>> gguf_tensor_fp16(const GgufTensorInfo& t, const TensorSpec& s,
                                                int64_t head_dim) {
  std::vector<int64_t> dims(s.shape.rbegin(), s.shape.rend());  // GGML order: innermost first
  if (t.dims != dims) {
    return make_error(
        ErrorCode::kInvalidFormat,
        "export: gguf tensor " + t.name + " does not have the shape " + s.hf_name + " needs");
  }
  if (!dequantizable(t.type)) {
    return make_error(ErrorCode::kUnsupported, "export: gguf tensor " + t.name + " has type " +
                                                   dtype_name(t.type) +
                                                   ", which cannot be dequantized here");
  }
  const int64_t cols = s.shape.back();
  const int64_t rows = t.num_elements() / cols;
  const std::optional<int64_t> row_bytes = dtype_row_bytes(t.type, cols);
  if (!row_bytes || static_cast<uint64_t>(*row_bytes * rows) != t.nbytes) {
    return make_error(ErrorCode::kInvalidFormat,
                      "export: gguf tensor " + t.name + " size does not match its shape and type");
  }
  std::vector<std::byte> out(static_cast<size_t>(rows * cols) * 2);
  std::vector<float> row(static_cast<size_t>(cols));
  if (s.shape.size() == 1 && s.permuted_heads > 0) {
    // A bias is permuted like the rows of its weight: element g goes where row g goes.
    dequantize_row(t.type, t.data, row.data(), cols);
    for (int64_t g = 0; g < cols; ++g) {
      QGATE_TRY_STATUS(to_fp16(&row[static_cast<size_t>(g)], 1,
                               out.data() + hf_row_of(g, head_dim) * 2, s.hf_name));
    }
    return out;
  }
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(t.type, t.data + r * *row_bytes, row.data(), cols);
    const int64_t dst = s.permuted_heads > 0 ? hf_row_of(r, head_dim) : r;
    QGATE_TRY_STATUS(to_fp16(row.data(), cols, out.data() + dst * cols * 2, s.hf_name));
  }
  return out;
}

Result<std::vector<std::byte>> hf_tensor_fp16(const SafetensorsTensor& t, const TensorSpec& s) {
  if (t.shape != s.shape) {
    return make_error(ErrorCode::kInvalidFormat, "export: tensor " + s.hf_name +
                                                     " does not have the shape the config implies");
  }
  int64_t n = 1;
  for (int64_t d : s.shape) n *= d;
  std::vector<std::byte> out(static_cast<size_t>(n) * 2);
  if (t.dtype == SafetensorsDType::kF16) {
    std::memcpy(out.data(), t.data, out.size());
    return out;
  }
  if (t.dtype != SafetensorsDType::kF32 && t.dtype != SafetensorsDType::kBF16) {
    return make_error(ErrorCode::kUnsupported, "export: tensor " + s.hf_name + " has dtype " +
                                                   safetensors_dtype_name(t.dtype) +
                                                   "; expected F32, F16 or BF16");
  }
  // Safetensors data carries no alignment guarantee: read through memcpy.
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (t.dtype == SafetensorsDType::kF32) {
      std::memcpy(&v[static_cast<size_t>(i)], t.data + 4 * i, 4);
    } else {
      uint16_t b = 0;
      std::memcpy(&b, t.data + 2 * i, 2);
      v[static_cast<size_t>(i)] = bf16_to_fp32(b);
    }
  }
  QGATE_TRY_STATUS(to_fp16(v.data(), n, out.data(), s.hf_name));
  return out;
}

// ---- JSON files -------------------------------------------------------------------------------

// The shortest decimal that reads back as the same float, so config.json says 1e-05, not
// 9.999999747378752e-06 (the float's exact value).
double shortest(float f) {
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof(buf), f);
  *res.ptr = '\0';
  return std::strtod(buf, nullptr);
}

void pretty(std::string& out, const json::value& v, int indent) {
  if (v.is_object() && !v.get_object().empty()) {
    out += "{\n";
    bool first = true;
    for (const auto& kv : v.get_object()) {
      if (!first) out += ",\n";
      first = false;
      out.append(static_cast<size_t>(indent + 2), ' ');
      out += json::serialize(kv.key());
      out += ": ";
      pretty(out, kv.value(), indent + 2);
    }
    out += '\n';
    out.append(static_cast<size_t>(indent), ' ');
    out += '}';
  } else if (v.is_array() && !v.get_array().empty()) {
    out += "[\n";
    bool first = true;
    for (const auto& e : v.get_array()) {
      if (!first) out += ",\n";
      first = false;
      out.append(static_cast<size_t>(indent + 2), ' ');
      pretty(out, e, indent + 2);
    }
    out += '\n';
    out.append(static_cast<size_t>(indent), ' ');
    out += ']';
  } else if (v.is_double()) {
    // Boost.JSON spells doubles "1E5"; write what Python's json writes ("100000.0", "1e-05").
    char buf[32];
    auto res = std::to_chars(buf, buf + sizeof(buf), v.get_double());
    std::string_view text(buf, static_cast<size_t>(res.ptr - buf));
    out += text;
    if (text.find_first_of(".e") == std::string_view::npos) out += ".0";
  } else {
    out += json::serialize(v);
  }
}

std::string pretty(const json::value& v) {
  std::string out;
  pretty(out, v, 0);
  out += '\n';
  return out;
}

// Small JSON files are written indented for people; tokenizer.json stays compact.
Result<std::string> pretty_text(const std::string& compact, const std::string& what) {
  boost::system::error_code ec;
  json::value v = json::parse(compact, ec);
  if (ec) return make_error(ErrorCode::kInvalidFormat, "export: " + what + " is not valid JSON");
  return pretty(v);
}

struct TokenIds {
  std::optional<int32_t> bos, eos, pad;
  std::vector<int32_t> stops;
};

json::value id_or_null(std::optional<int32_t> id) {
  return id ? json::value(*id) : json::value(nullptr);
}

std::string config_json(const LlamaConfig& c, const TokenIds& ids) {
  const bool qwen2 = c.architecture == "qwen2";
  json::object o{{"architectures", json::array{qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
                 {"attention_bias", c.attention_bias},
                 {"attention_dropout", 0.0},
                 {"bos_token_id", id_or_null(ids.bos)},
                 {"eos_token_id", id_or_null(ids.eos)},
                 {"head_dim", c.head_dim},
                 {"hidden_act", "silu"},
                 {"hidden_size", c.hidden_size},
                 {"initializer_range", 0.02},
                 {"intermediate_size", c.intermediate_size},
                 {"max_position_embeddings", c.max_position_embeddings},
                 {"mlp_bias", false},
                 {"model_type", qwen2 ? "qwen2" : "llama"},
                 {"num_attention_heads", c.num_heads},
                 {"num_hidden_layers", c.num_layers},
                 {"num_key_value_heads", c.num_kv_heads}};
  if (ids.pad) o.emplace("pad_token_id", *ids.pad);
  o.emplace("pretraining_tp", 1);
  o.emplace("rms_norm_eps", shortest(c.rms_norm_eps));
  o.emplace("rope_scaling", nullptr);
  o.emplace("rope_theta", shortest(c.rope_theta));
  o.emplace("tie_word_embeddings", c.tie_word_embeddings);
  o.emplace("torch_dtype", "float16");
  if (qwen2) o.emplace("use_sliding_window", false);
  o.emplace("use_cache", true);
  o.emplace("vocab_size", c.vocab_size);
  return pretty(o);
}

std::string generation_config_json(const TokenIds& ids) {
  json::array eos;
  for (int32_t id : ids.stops) eos.push_back(id);
  json::object o{{"bos_token_id", id_or_null(ids.bos)}, {"eos_token_id", std::move(eos)}};
  if (ids.pad) o.emplace("pad_token_id", *ids.pad);
  return pretty(o);
}

// ---- the directory ------------------------------------------------------------------------------

struct ExportFiles {
  std::vector<std::pair<std::string, std::string>> text;  // file name, contents
  SafetensorsWriter weights;
};

Status write_synced(const std::string& path, const std::string& data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("cannot create", path, errno);
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    const ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      const int err = errno;
      ::close(fd);
      return io_error("cannot write", path, err);
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    return io_error("cannot fsync", path, err);
  }
  if (::close(fd) != 0) return io_error("cannot close", path, errno);
  return Status::Ok();
}

Status fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return io_error("cannot open directory", dir.string(), errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return io_error("cannot fsync directory", dir.string(), err);
  return Status::Ok();
}

// "out/" and "out" name the same directory; the temporary sibling needs the name without slash.
fs::path normalized(const std::string& p) {
  fs::path path = fs::absolute(fs::path(p)).lexically_normal();
  if (!path.has_filename() && path.has_parent_path()) path = path.parent_path();
  return path;
}

Status check_destination(const fs::path& out, const HfExportOptions& options) {
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(out, ec);
  if (ec && ec != std::errc::no_such_file_or_directory)
    return make_error(ErrorCode::kIo,
                      "export: cannot inspect '" + out.string() + "': " + ec.message());
  if (!fs::exists(st)) return Status::Ok();
  if (!fs::is_directory(st)) {
    return make_error(
        ErrorCode::kInvalidArgument,
        "export: '" + out.string() + "' exists and is not a directory; not replacing it");
  }
  if (!options.overwrite) {
    return make_error(ErrorCode::kInvalidArgument,
                      "export: output directory '" + out.string() +
                          "' already exists (pass overwrite to replace it)");
  }
  return Status::Ok();
}

// Moves the finished temporary directory to `out`. A new directory is a plain rename; replacing
// one swaps the two atomically (RENAME_EXCHANGE) so readers never see `out` missing, and falls back
// to two renames on filesystems without the exchange.
Status publish(const fs::path& tmp, const fs::path& out, bool overwrite) {
  if (::rename(tmp.c_str(), out.c_str()) == 0) return fsync_dir(out.parent_path());
  const int err = errno;
  if ((err != EEXIST && err != ENOTEMPTY) || !overwrite) {
    if (err == EEXIST || err == ENOTEMPTY) {
      return make_error(ErrorCode::kInvalidArgument,
                        "export: output directory '" + out.string() + "' appeared while exporting");
    }
    return io_error("cannot rename the finished export onto", out.string(), err);
  }
  std::error_code ec;
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, out.c_str(), RENAME_EXCHANGE) == 0) {
    QGATE_TRY_STATUS(fsync_dir(out.parent_path()));
    fs::remove_all(tmp, ec);  // now the old directory
    return Status::Ok();
  }
  std::string old = out.string() + ".old-XXXXXX";
  if (::mkdtemp(old.data()) == nullptr) return io_error("cannot create", old, errno);
  if (::rename(out.c_str(), old.c_str()) != 0) {
    const int e = errno;
    fs::remove(old, ec);
    return io_error("cannot move aside", out.string(), e);
  }
  if (::rename(tmp.c_str(), out.c_str()) != 0) {
    const int e = errno;
    ::rename(old.c_str(), out.c_str());  // put the old one back
    return io_error("cannot rename the finished export onto", out.string(), e);
  }
  QGATE_TRY_STATUS(fsync_dir(out.parent_path()));
  fs::remove_all(old, ec);
  return Status::Ok();
}

Status write_directory(const ExportFiles& files, const std::string& out_dir,
                       const HfExportOptions& options) {
  const fs::path out = normalized(out_dir);
  QGATE_TRY_STATUS(check_destination(out, options));
  std::error_code ec;
  fs::create_directories(out.parent_path(), ec);
  if (ec) {
    return make_error(ErrorCode::kIo, "export: cannot create '" + out.parent_path().string() +
                                          "': " + ec.message());
  }
  std::string tmp = out.string() + ".tmp-XXXXXX";
  if (::mkdtemp(tmp.data()) == nullptr) return io_error("cannot create directory", tmp, errno);
  auto abandon = [&](const Error& e) -> Status {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    return e;
  };
  // mkdtemp makes the directory 0700; a checkpoint is meant to be shared like any other output.
  fs::permissions(tmp,
                  fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                      fs::perms::others_read | fs::perms::others_exec,
                  ec);
  for (const auto& [name, text] : files.text) {
    if (Status st = write_synced(tmp + "/" + name, text); !st.ok()) return abandon(st.error());
  }
  if (Status st = files.weights.write(tmp + "/model.safetensors"); !st.ok())
    return abandon(st.error());
  if (Status st = fsync_dir(tmp); !st.ok()) return abandon(st.error());
  if (Status st = publish(tmp, out, options.overwrite); !st.ok()) return abandon(st.error());
  return Status::Ok();
}

// ---- sources
// --------------------------------------------------------------------------------------

Result<ExportFiles> files_from_gguf(const GgufFile& gguf, const ExportProgress& progress) {
  QGATE_ASSIGN_OR_RETURN(LlamaConfig c, llama_config_from_gguf(gguf));
  QGATE_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::from_gguf(gguf));
  TokenIds ids{tok.bos_id(), tok.eos_id(), std::nullopt, tok.stop_ids()};
  if (gguf.has("tokenizer.ggml.padding_token_id")) {
    QGATE_ASSIGN_OR_RETURN(int64_t pad, gguf.get_int("tokenizer.ggml.padding_token_id"));
    if (pad >= 0 && pad < tok.vocab_size()) ids.pad = static_cast<int32_t>(pad);
  }
  ExportFiles files;
  QGATE_ASSIGN_OR_RETURN(std::string tokenizer_json, tokenizer_json_from_gguf(gguf));
  QGATE_ASSIGN_OR_RETURN(std::string tok_config, tokenizer_config_json_from_gguf(gguf));
  QGATE_ASSIGN_OR_RETURN(tok_config, pretty_text(tok_config, "tokenizer_config.json"));
  files.text = {{"config.json", config_json(c, ids)},
                {"generation_config.json", generation_config_json(ids)},
                {"tokenizer.json", std::move(tokenizer_json)},
                {"tokenizer_config.json", std::move(tok_config)}};

  // Only Llama is permuted by the converter; Qwen2 keeps HF's layout (see llama_config_from_gguf).
  const std::vector<TensorSpec> specs = tensor_specs(c, c.rope_style == RopeStyle::kAdjacentPairs);
  size_t used = 0;
  for (size_t k = 0; k < specs.size(); ++k) {
    const TensorSpec& s = specs[k];
    const GgufTensorInfo* t = gguf.find_tensor(s.gguf_name);
    if (t == nullptr)
      return make_error(ErrorCode::kInvalidFormat,
                        "export: gguf tensor " + s.gguf_name + " is missing");
    ++used;
    QGATE_ASSIGN_OR_RETURN(std::vector<std::byte> data, gguf_tensor_fp16(*t, s, c.head_dim));
    QGATE_TRY_STATUS(
        files.weights.add(s.hf_name, SafetensorsDType::kF16, s.shape, std::move(data)));
    if (progress) progress(s.hf_name, k + 1, specs.size());
  }
  // A tensor we do not map (rope_freqs for Llama-3.1 scaling, say) changes the model: refuse
  // rather than export something that computes differently.
  if (used != gguf.tensors().size()) {
    for (const GgufTensorInfo& t : gguf.tensors()) {
      bool mapped = std::any_of(specs.begin(), specs.end(),
                                [&](const TensorSpec& s) { return s.gguf_name == t.name; });
      if (!mapped) {
        return make_error(ErrorCode::kUnsupported,
                          "export: gguf tensor " + t.name + " has no HF Llama counterpart");
      }
    }
  }
  QGATE_TRY_STATUS(files.weights.set_metadata("format", "pt"));
  return files;
}

Result<ExportFiles> files_from_hf_dir(const std::string& dir, const ExportProgress& progress) {
  QGATE_ASSIGN_OR_RETURN(HfCheckpoint ckpt, HfCheckpoint::open(dir));
  const LlamaConfig& c = ckpt.config();
  ExportFiles files;
  QGATE_ASSIGN_OR_RETURN(std::string config_text, read_text_file(dir + "/config.json"));
  boost::system::error_code ec;
  json::value config = json::parse(config_text, ec);
  if (ec || !config.is_object())
    return make_error(ErrorCode::kInvalidFormat,
                      "export: " + dir + "/config.json is not an object");
  config.get_object()["torch_dtype"] = "float16";
  if (config.get_object().contains("dtype")) config.get_object()["dtype"] = "float16";
  files.text.emplace_back("config.json", pretty(config));
  // Tokenizer and generation files carry over unchanged.
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "generation_config.json",
                           "special_tokens_map.json", "chat_template.jinja"}) {
    const std::string path = dir + "/" + name;
    if (!fs::exists(path)) continue;
    QGATE_ASSIGN_OR_RETURN(std::string text, read_text_file(path));
    files.text.emplace_back(name, std::move(text));
  }
  const std::vector<TensorSpec> specs = tensor_specs(c, false);
  for (size_t k = 0; k < specs.size(); ++k) {
    const SafetensorsTensor* t = ckpt.find(specs[k].hf_name);
    if (t == nullptr) {
      return make_error(ErrorCode::kInvalidFormat,
                        "export: " + dir + ": missing tensor " + specs[k].hf_name);
    }
    QGATE_ASSIGN_OR_RETURN(std::vector<std::byte> data, hf_tensor_fp16(*t, specs[k]));
    QGATE_TRY_STATUS(files.weights.add(specs[k].hf_name, SafetensorsDType::kF16, specs[k].shape,
                                       std::move(data)));
    if (progress) progress(specs[k].hf_name, k + 1, specs.size());
  }
  QGATE_TRY_STATUS(files.weights.set_metadata("format", "pt"));
  return files;
}

// True when `inner` is `outer` or lies inside it.
bool contains(const fs::path& outer, const fs::path& inner) {
  std::error_code ec;
  const fs::path a = fs::weakly_canonical(outer, ec);
  const fs::path b = fs::weakly_canonical(inner, ec);
  return std::mismatch(a.begin(), a.end(), b.begin(), b.end()).first == a.end();
}

}  // namespace

Status export_hf_fp16_from_gguf(const GgufFile& gguf, const std::string& out_dir,
                                const HfExportOptions& options, const ExportProgress& progress) {
  // Refuse early, before minutes of conversion, when the destination is already taken.
  QGATE_TRY_STATUS(check_destination(normalized(out_dir), options));
  QGATE_ASSIGN_OR_RETURN(ExportFiles files, files_from_gguf(gguf, progress));
  return write_directory(files, out_dir, options);
}

Status export_hf_fp16(const std::string& src_path, const std::string& out_dir,
                      const HfExportOptions& options, const ExportProgress& progress) {
  std::error_code ec;
  if (!fs::exists(src_path, ec))
    return make_error(ErrorCode::kNotFound, "export: " + src_path + ": no such file or directory");
  if (contains(normalized(out_dir), normalized(src_path))) {
    return make_error(ErrorCode::kInvalidArgument, "export: output directory '" + out_dir +
                                                       "' holds the source '" + src_path + "'");
  }
  QGATE_TRY_STATUS(check_destination(normalized(out_dir), options));
  if (fs::is_directory(src_path, ec)) {
    QGATE_ASSIGN_OR_RETURN(ExportFiles files, files_from_hf_dir(src_path, progress));
    return write_directory(files, out_dir, options);
  }
  QGATE_ASSIGN_OR_RETURN(GgufFile gguf, GgufFile::open(src_path));
  return export_hf_fp16_from_gguf(gguf, out_dir, options, progress);
}

}  // namespace qgate
