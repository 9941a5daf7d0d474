#include "engine/safetensors_writer.h"

#include <fcntl.h>
#include <simdjson.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace qgate {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

namespace {


// Position in the reference's Dtype enum (BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16,
// I32, U32, F32, F64, I64, U64), which it sorts by, descending.
int reference_rank(SafetensorsDType t) {
  switch (t) {
    case SafetensorsDType::kU8:
      return 1;
    case SafetensorsDType::kI8:
      return 2;
    case SafetensorsDType::kF16:
      return 7;
    case SafetensorsDType::kBF16:
      return 8;
    case SafetensorsDType::kI32:
      return 9;
    case SafetensorsDType::kF32:
      return 11;
    case SafetensorsDType::kI64:
      return 13;
  }
  return 0;
}

Error invalid(const std::string& msg) {
  return make_error(ErrorCode::kInvalidArgument, "safetensors writer: " + msg);
}

Error io_error(const std::string& what, const std::string& path, int err) {
  return make_error(ErrorCode::kIo,
                    "safetensors writer: " + what + " '" + path + "': " + std::strerror(err));
}

bool is_utf8(const std::string& s) { return simdjson::validate_utf8(s.data(), s.size()); }

Status write_all(int fd, const void* data, size_t n, const std::string& path) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return io_error("cannot write", path, errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

// Unique per process and call; O_EXCL below guards against leftovers of an earlier process.
std::string temp_name(const std::string& path, int attempt) {
  static std::atomic<uint64_t> counter{0};
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1)) +
         "." + std::to_string(attempt);
}

}  // namespace

Status SafetensorsWriter::add(std::string name, SafetensorsDType dtype, std::vector<int64_t> shape,
                              std::span<const std::byte> data) {
  return add(std::move(name), dtype, std::move(shape),
             std::vector<std::byte>(data.begin(), data.end()));
}

Status SafetensorsWriter::add(std::string name, SafetensorsDType dtype, std::vector<int64_t> shape,
                              std::vector<std::byte>&& data) {
  if (name.empty()) return invalid("empty tensor name");
  if (name == "__metadata__") return invalid("'__metadata__' is reserved, not a tensor name");
  if (!is_utf8(name)) return invalid("tensor name is not valid UTF-8");
  for (const Entry& e : tensors_) {
    if (e.name == name) return invalid("duplicate tensor '" + name + "'");
  }
  uint64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) return invalid("tensor '" + name + "' has a negative dimension");
    if (d != 0 && count > UINT64_MAX / static_cast<uint64_t>(d)) {
      return invalid("tensor '" + name + "' has too many elements");
    }
    count *= static_cast<uint64_t>(d);
  }
  const uint64_t want = count * safetensors_dtype_size(dtype);
  if (count > UINT64_MAX / safetensors_dtype_size(dtype) || want != data.size()) {
    return invalid("tensor '" + name + "' has " + std::to_string(data.size()) +
                   " bytes, its shape and dtype " + safetensors_dtype_name(dtype) + " need " +
                   std::to_string(want));
  }
  tensors_.push_back({std::move(name), dtype, std::move(shape), std::move(data)});
  return Status::Ok();
}

Status SafetensorsWriter::set_metadata(std::string key, std::string value) {
  if (!is_utf8(key) || !is_utf8(value)) return invalid("metadata '" + key + "' is not valid UTF-8");
  metadata_[std::move(key)] = std::move(value);
  return Status::Ok();
}

std::vector<const SafetensorsWriter::Entry*> SafetensorsWriter::ordered() const {
  std::vector<const Entry*> out;
  out.reserve(tensors_.size());
  for (const Entry& e : tensors_) out.push_back(&e);
  std::sort(out.begin(), out.end(), [](const Entry* a, const Entry* b) {
    const int ra = reference_rank(a->dtype), rb = reference_rank(b->dtype);
    if (ra != rb) return ra > rb;
    return a->name < b->name;
  });
  return out;
}

std::string SafetensorsWriter::header() const {
  boost::json::object root;
  if (!metadata_.empty()) {
    boost::json::object meta;
    for (const auto& [k, v] : metadata_) meta.emplace(k, v);
    root.emplace("__metadata__", std::move(meta));
  }
  uint64_t offset = 0;
  for (const Entry* e : ordered()) {
    boost::json::object info;
    info.emplace("dtype", safetensors_dtype_name(e->dtype));
    boost::json::array shape;
    for (int64_t d : e->shape) shape.emplace_back(d);
    info.emplace("shape", std::move(shape));
    const uint64_t end = offset + e->data.size();
    info.emplace("data_offsets", boost::json::array{offset, end});
    offset = end;
    root.emplace(e->name, std::move(info));
  }
  std::string json = boost::json::serialize(root);
  // The reference pads with spaces to a multiple of 8 so the data section starts 8-aligned.
  json.append((8 - json.size() % 8) % 8, ' ');
  return json;
}

std::vector<std::byte> SafetensorsWriter::serialize() const {
  const std::string h = header();
  const uint64_t n = h.size();
  size_t total = 8 + h.size();
  for (const Entry& e : tensors_) total += e.data.size();
  // Sized once and filled with memcpy (growing inserts trip a GCC 12 -Warray-bounds false alarm).
  std::vector<std::byte> out(total);
  std::byte* p = out.data();
  std::memcpy(p, &n, 8);
  std::memcpy(p + 8, h.data(), h.size());
  p += 8 + h.size();
  for (const Entry* e : ordered()) {
    if (!e->data.empty()) std::memcpy(p, e->data.data(), e->data.size());
    p += e->data.size();
  }
  return out;
}

Status SafetensorsWriter::write(const std::string& path) const {
  const std::string h = header();
  const uint64_t n = h.size();
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";

  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 8 && fd < 0; ++attempt) {
    tmp = temp_name(path, attempt);
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) return io_error("cannot create", tmp, errno);
  }
  if (fd < 0) return io_error("cannot create a unique temporary beside", path, EEXIST);

  auto abandon = [&](Error err) -> Status {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    return err;
  };
  Status st = write_all(fd, &n, 8, tmp);
  if (st.ok()) st = write_all(fd, h.data(), h.size(), tmp);
  for (const Entry* e : ordered()) {
    if (!st.ok()) break;
    st = write_all(fd, e->data.data(), e->data.size(), tmp);
  }
  if (!st.ok()) return abandon(st.error());
  // fsync before rename: otherwise a crash can leave the new name pointing at missing data.
  if (::fsync(fd) != 0) return abandon(io_error("cannot fsync", tmp, errno));
  const int rc = ::close(fd);
  fd = -1;
  if (rc != 0) return abandon(io_error("cannot close", tmp, errno));
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    return abandon(io_error("cannot rename onto", path, errno));
  // The rename itself lives in the directory: fsync it so the new name survives a crash.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return io_error("cannot open directory", dir.string(), errno);
  const int drc = ::fsync(dfd);
  const int derr = errno;
  ::close(dfd);
  if (drc != 0) return io_error("cannot fsync directory", dir.string(), derr);
  return Status::Ok();
}

}  // namespace qgate
