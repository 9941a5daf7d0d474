#include "engine/quantize_pipeline.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "engine/gguf.h"
#include "engine/hf_export.h"
#include "engine/hf_loader.h"
#include "engine/quantize_pipeline_internal.h"
#include "engine/safetensors_writer.h"
#include "engine/tokenizer.h"
#include "kernels/cpu/half.h"

namespace qgate {

namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace quantize_pipeline_internal;

Error invalid(std::string msg) { return make_error(ErrorCode::kInvalidArgument, std::move(msg)); }

Error io_error(const std::string& what, const std::string& path, int err) {
  return make_error(ErrorCode::kIo, what + " " + path + ": " + std::strerror(err));
}

// ---- SHA-256 (FIPS 180-4) -----------------------------------------------------------------------

constexpr std::array<uint32_t, 64> kSha256K = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

void sha256_block(std::array<uint32_t, 8>& h, const unsigned char* p) {
  uint32_t w[64];
  for (int i = 0; i < 16; ++i) {
    w[i] = (uint32_t{p[4 * i]} << 24) | (uint32_t{p[4 * i + 1]} << 16) |
           (uint32_t{p[4 * i + 2]} << 8) | uint32_t{p[4 * i + 3]};
  }
  for (int i = 16; i < 64; ++i) {
    const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
  for (int i = 0; i < 64; ++i) {
    const uint32_t t1 =
        hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kSha256K[i] + w[i];
    const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    hh = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
  h[5] += f;
  h[6] += g;
  h[7] += hh;
}

// ---- output -------------------------------------------------------------------------------------

Status write_file_synced(const std::string& path, const std::string& data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("cannot create", path, errno);
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t w = ::write(fd, data.data() + done, data.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      const int err = errno;
      ::close(fd);
      return io_error("cannot write", path, err);
    }
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    return io_error("cannot fsync", path, err);
  }
  if (::close(fd) != 0) return io_error("cannot close", path, errno);
  return Status::Ok();
}

std::span<const std::byte> as_bytes_of(const auto& v) {
  return std::as_bytes(std::span(v.data(), v.size()));
}

json::object quant_config_json(const QuantizeOptions& o) {
  json::object q;
  if (o.method == QuantizeMethod::kAwq) {
    q["quant_method"] = "awq";
    q["bits"] = o.bits;
    q["group_size"] = o.group_size;
    q["zero_point"] = !o.sym;
    q["version"] = "gemm";
    return q;
  }
  q["quant_method"] = "gptq";
  q["bits"] = o.bits;
  q["group_size"] = o.group_size;
  q["desc_act"] = o.desc_act;
  q["sym"] = o.sym;
  q["damp_percent"] = o.damp;
  q["true_sequential"] = true;
  q["static_groups"] = false;
  q["checkpoint_format"] = o.sym ? "gptq" : "gptq_v2";
  if (o.method == QuantizeMethod::kRtn) q["qgate_method"] = "rtn";
  return q;
}

Status add_fp16(SafetensorsWriter& w, const std::string& name, const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = fp32_to_fp16(v[i]);
  return w.add(name, SafetensorsDType::kF16, {static_cast<int64_t>(v.size())}, as_bytes_of(h));
}

// Rewrites model.safetensors and config.json of the exported FP16 directory `dir` into the
// quantized checkpoint, and adds quantize_config.json (GPTQ layout).
Status write_quantized(const std::string& dir, const QuantizedModel& m, const QuantizeOptions& o) {
  QGATE_ASSIGN_OR_RETURN(HfCheckpoint ck, HfCheckpoint::open(dir));
  SafetensorsWriter w;
  QGATE_TRY_STATUS(w.set_metadata("format", "pt"));
  // Embedding, final norm and lm_head stay as exported (fp16).
  for (const char* name : {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}) {
    const SafetensorsTensor* t = ck.find(name);
    if (t == nullptr) continue;
    QGATE_TRY_STATUS(w.add(name, t->dtype, t->shape, std::span(t->data, t->nbytes)));
  }
  for (const auto& [name, v] : m.norms) QGATE_TRY_STATUS(add_fp16(w, name, v));
  const GptqCheckpointFormat fmt =
      o.sym ? GptqCheckpointFormat::kGptq : GptqCheckpointFormat::kGptqV2;
  // Both layouts store qweight/qzeros (int32) and scales (fp16); GPTQ adds g_idx.
  auto add_packed = [&](const std::string& name, const auto& p) -> Status {
    QGATE_TRY_STATUS(w.add(name + ".qweight", SafetensorsDType::kI32, p.qweight_shape,
                           as_bytes_of(p.qweight)));
    QGATE_TRY_STATUS(w.add(name + ".qzeros", SafetensorsDType::kI32, p.qzeros_shape,
                           as_bytes_of(p.qzeros)));
    return w.add(name + ".scales", SafetensorsDType::kF16, p.scales_shape, as_bytes_of(p.scales));
  };
  for (const QuantizedEntry& e : m.linears) {
    if (o.method == QuantizeMethod::kAwq) {
      auto p = pack_awq(e.layer);
      if (!p.ok()) return make_error(p.error().code(), e.name + ": " + p.error().message());
      QGATE_TRY_STATUS(add_packed(e.name, p.value()));
    } else {
      auto p = pack_gptq(e.layer, fmt);
      if (!p.ok()) return make_error(p.error().code(), e.name + ": " + p.error().message());
      QGATE_TRY_STATUS(add_packed(e.name, p.value()));
      QGATE_TRY_STATUS(
          w.add(e.name + ".g_idx", SafetensorsDType::kI32, p->g_idx_shape, as_bytes_of(p->g_idx)));
    }
  }
  QGATE_TRY_STATUS(w.write(dir + "/model.safetensors"));

  QGATE_ASSIGN_OR_RETURN(std::string config_text, read_text_file(dir + "/config.json"));
  boost::system::error_code ec;
  json::value config = json::parse(config_text, ec);
  if (ec || !config.is_object()) return invalid("exported config.json is not a JSON object");
  const json::object qc = quant_config_json(o);
  config.as_object()["quantization_config"] = qc;
  QGATE_TRY_STATUS(write_file_synced(dir + "/config.json", json::serialize(config) + "\n"));
  if (o.method != QuantizeMethod::kAwq) {
    QGATE_TRY_STATUS(write_file_synced(dir + "/quantize_config.json", json::serialize(qc) + "\n"));
  }
  return Status::Ok();
}

// Moves the finished temporary directory to out (replacing an old one when allowed).
Status publish(const fs::path& tmp, const fs::path& out, bool overwrite) {
  std::error_code ec;
  fs::path old;
  if (fs::exists(out, ec)) {
    if (!overwrite) return invalid("output " + out.string() + " exists (use --overwrite)");
    old = out;
    old += ".old-" + std::to_string(::getpid());
    fs::rename(out, old, ec);
    if (ec) return make_error(ErrorCode::kIo, "cannot move " + out.string() + ": " + ec.message());
  }
  fs::rename(tmp, out, ec);
  if (ec)
    return make_error(ErrorCode::kIo, "cannot rename to " + out.string() + ": " + ec.message());
  if (!old.empty()) fs::remove_all(old, ec);
  const int fd = ::open(out.parent_path().empty() ? "." : out.parent_path().c_str(),
                        O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  return Status::Ok();
}

Result<LlamaConfig> source_config(const std::string& input) {
  std::error_code ec;
  if (fs::is_directory(input, ec)) {
    QGATE_ASSIGN_OR_RETURN(HfCheckpoint ck, HfCheckpoint::open(input));
    if (ck.quant_config())
      return make_error(ErrorCode::kUnsupported,
                        input + " is already quantized; give a float model");
    return ck.config();
  }
  QGATE_ASSIGN_OR_RETURN(GgufFile g, GgufFile::open(input));
  return llama_config_from_gguf(g);
}

// Refuses before any work what the formats cannot hold for this model's shapes.
Status check_shapes(const QuantizeOptions& o, const LlamaConfig& c) {
  if (o.method == QuantizeMethod::kFp16) return Status::Ok();
  if (c.attention_bias) {
    return make_error(ErrorCode::kUnsupported, "models with q/k/v biases are not supported yet");
  }
  struct Shape {
    const char* name;
    int64_t n, k;
  };
  const Shape shapes[] = {{"self_attn.q_proj", c.q_dim(), c.hidden_size},
                          {"self_attn.k_proj", c.kv_dim(), c.hidden_size},
                          {"self_attn.v_proj", c.kv_dim(), c.hidden_size},
                          {"self_attn.o_proj", c.hidden_size, c.q_dim()},
                          {"mlp.gate_proj", c.intermediate_size, c.hidden_size},
                          {"mlp.up_proj", c.intermediate_size, c.hidden_size},
                          {"mlp.down_proj", c.hidden_size, c.intermediate_size}};
  for (const Shape& s : shapes) {
    const std::string dims = "model.layers.*." + std::string(s.name) + " [" + std::to_string(s.n) +
                             " x " + std::to_string(s.k) + "]";
    if (o.method == QuantizeMethod::kAwq) {
      if (o.group_size > 0 && o.group_size < s.k && s.k % o.group_size != 0) {
        return invalid("awq: group size " + std::to_string(o.group_size) +
                       " does not divide the input dimension " + std::to_string(s.k) + " of " +
                       dims + " (AWQ needs whole groups; GPTQ allows a partial last group)");
      }
      if (s.n % 8 != 0)
        return invalid("awq: output dimension of " + dims + " is not a multiple of 8");
    } else if (s.n % 32 != 0 || s.k % 32 != 0) {
      return invalid("gptq layout needs dimensions that are multiples of 32: " + dims);
    }
  }
  return Status::Ok();
}

}  // namespace

const char* quantize_method_name(QuantizeMethod m) {
  switch (m) {
    case QuantizeMethod::kFp16:
      return "fp16";
    case QuantizeMethod::kRtn:
      return "rtn";
    case QuantizeMethod::kGptq:
      return "gptq";
    case QuantizeMethod::kAwq:
      return "awq";
  }
  return "?";
}

Result<QuantizeMethod> parse_quantize_method(std::string_view name) {
  for (QuantizeMethod m :
       {QuantizeMethod::kFp16, QuantizeMethod::kRtn, QuantizeMethod::kGptq, QuantizeMethod::kAwq}) {
    if (name == quantize_method_name(m)) return m;
  }
  return invalid("unknown method '" + std::string(name) + "' (fp16, rtn, gptq, awq)");
}

std::string sha256_hex(std::string_view bytes) {
  std::array<uint32_t, 8> h = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t n = bytes.size();
  size_t i = 0;
  for (; i + 64 <= n; i += 64) sha256_block(h, p + i);
  unsigned char tail[128] = {};
  const size_t rest = n - i;
  std::memcpy(tail, p + i, rest);
  tail[rest] = 0x80;
  const size_t tail_len = rest + 9 <= 64 ? 64 : 128;
  const uint64_t bits = static_cast<uint64_t>(n) * 8;
  for (int b = 0; b < 8; ++b) tail[tail_len - 1 - b] = static_cast<unsigned char>(bits >> (8 * b));
  for (size_t off = 0; off < tail_len; off += 64) sha256_block(h, tail + off);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (uint32_t v : h) {
    for (int s = 28; s >= 0; s -= 4) out.push_back(hex[(v >> s) & 0xf]);
  }
  return out;
}

Result<std::vector<int32_t>> draw_calibration_windows(const std::vector<int32_t>& tokens,
                                                      int64_t samples, int64_t seqlen,
                                                      uint64_t seed) {
  if (samples <= 0 || seqlen <= 0) return invalid("calib samples and seqlen must be positive");
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < seqlen) {
    return invalid("calibration text has " + std::to_string(n) + " tokens, fewer than seqlen " +
                   std::to_string(seqlen));
  }
  std::mt19937_64 rng(seed);
  const uint64_t starts = static_cast<uint64_t>(n - seqlen + 1);
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(samples * seqlen));
  for (int64_t s = 0; s < samples; ++s) {
    const int64_t off = static_cast<int64_t>(rng() % starts);
    out.insert(out.end(), tokens.begin() + off, tokens.begin() + off + seqlen);
  }
  return out;
}

Status check_quantize_options(const QuantizeOptions& o) {
  if (o.input.empty() || o.output.empty()) return invalid("--input and --output are required");
  if (o.method == QuantizeMethod::kFp16) return Status::Ok();
  if (o.bits != 4 && o.bits != 8) return invalid("--bits must be 4 or 8");
  if (o.method == QuantizeMethod::kAwq && o.bits != 4) return invalid("awq: only 4 bits");
  if (o.group_size == 0 || o.group_size < -1) return invalid("--group-size must be -1 or > 0");
  if (o.desc_act && o.method != QuantizeMethod::kGptq) return invalid("--desc-act is gptq only");
  if (o.method == QuantizeMethod::kAwq && o.sym) {
    return invalid("awq: the GEMM format stores zero points; use --asym");
  }
  if (!(o.damp >= 0.0 && o.damp < 1.0)) return invalid("--damp must be in [0, 1)");
  if (o.threads < 1) return invalid("--threads must be >= 1");
  if (o.awq_grid < 1) return invalid("awq grid must be >= 1");
  const bool calibrated = o.method == QuantizeMethod::kGptq || o.method == QuantizeMethod::kAwq;
  if (calibrated) {
    if (o.calib_file.empty()) return invalid("--calib is required for gptq and awq");
    if (o.calib_samples <= 0 || o.calib_seqlen <= 0) {
      return invalid("--calib-samples and --calib-seqlen must be positive");
    }
  }
  return Status::Ok();
}

Result<QuantizeReport> quantize_model(const QuantizeOptions& o, const QuantizeProgress& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  QGATE_TRY_STATUS(check_quantize_options(o));
  std::error_code ec;
  const fs::path out = fs::absolute(o.output).lexically_normal();
  if (fs::exists(out, ec) && !o.overwrite) {
    return invalid("output " + out.string() + " exists (use --overwrite)");
  }
  QuantizeReport report;
  if (o.method == QuantizeMethod::kFp16) {
    QGATE_TRY_STATUS(export_hf_fp16(o.input, o.output, HfExportOptions{o.overwrite}));
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return report;
  }
  QGATE_ASSIGN_OR_RETURN(LlamaConfig config, source_config(o.input));
  QGATE_TRY_STATUS(check_shapes(o, config));
  std::string calib_text;
  if (o.method != QuantizeMethod::kRtn) {
    QGATE_ASSIGN_OR_RETURN(calib_text, read_text_file(o.calib_file, 1u << 30));
    report.calib_sha256 = sha256_hex(calib_text);
  }

  fs::path tmp = out;
  tmp += ".tmp-quantize-" + std::to_string(::getpid());
  fs::remove_all(tmp, ec);
  // Everything below works inside tmp; any failure removes it.
  auto run = [&]() -> Status {
    if (progress) progress("[quantize] exporting fp16 weights and tokenizer");
    QGATE_TRY_STATUS(export_hf_fp16(o.input, tmp.string()));
    std::vector<int32_t> calib;
    if (!calib_text.empty()) {
      QGATE_ASSIGN_OR_RETURN(Tokenizer tok,
                             Tokenizer::from_hf_json_file((tmp / "tokenizer.json").string()));
      const std::vector<int32_t> tokens = tok.encode(calib_text, false);
      report.calib_tokens = static_cast<int64_t>(tokens.size());
      QGATE_ASSIGN_OR_RETURN(
          calib, draw_calibration_windows(tokens, o.calib_samples, o.calib_seqlen, o.seed));
    }
    QGATE_ASSIGN_OR_RETURN(QuantizedModel m, quantize_layers(tmp.string(), o, calib, progress));
    QGATE_TRY_STATUS(write_quantized(tmp.string(), m, o));
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    json::object rec;
    rec["method"] = quantize_method_name(o.method);
    rec["input"] = o.input;
    rec["bits"] = o.bits;
    rec["group_size"] = o.group_size;
    rec["sym"] = o.sym;
    rec["desc_act"] = o.desc_act;
    rec["damp"] = o.damp;
    rec["threads"] = o.threads;
    if (o.method != QuantizeMethod::kRtn) {
      rec["calib_file"] = o.calib_file;
      rec["calib_sha256"] = report.calib_sha256;
      rec["calib_tokens"] = report.calib_tokens;
      rec["calib_samples"] = o.calib_samples;
      rec["calib_seqlen"] = o.calib_seqlen;
      rec["seed"] = o.seed;
    }
    rec["seconds"] = report.seconds;
    QGATE_TRY_STATUS(
        write_file_synced((tmp / "qgate_quantize.json").string(), json::serialize(rec) + "\n"));
    return publish(tmp, out, o.overwrite);
  };
  Status st = run();
  if (!st.ok()) {
    fs::remove_all(tmp, ec);
    return st.error();
  }
  return report;
}

}  // namespace qgate
