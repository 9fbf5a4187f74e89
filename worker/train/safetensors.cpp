#include "worker/train/safetensors.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace relora::train {
namespace {

struct DtypeName {
  torch::ScalarType type;
  const char* name;
};
constexpr DtypeName kDtypes[] = {
    {torch::kFloat32, "F32"}, {torch::kFloat64, "F64"}, {torch::kBFloat16, "BF16"},
    {torch::kFloat16, "F16"}, {torch::kInt64, "I64"},   {torch::kInt32, "I32"},
    {torch::kUInt8, "U8"},    {torch::kInt8, "I8"},     {torch::kBool, "BOOL"},
};

const char* dtype_to_name(torch::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  throw std::runtime_error(std::string("safetensors: unsupported dtype ") + c10::toString(t));
}

bool name_to_dtype(const std::string& name, torch::ScalarType* out) {
  for (const auto& d : kDtypes) {
    if (name == d.name) {
      *out = d.type;
      return true;
    }
  }
  return false;
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": not a valid safetensors file: " + what);
}

}  // namespace

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  data.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    auto cpu = t.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(cpu.numel()) * cpu.element_size();
    header[name] = {{"dtype", dtype_to_name(cpu.scalar_type())},
                    {"shape", cpu.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(cpu));
  }
  std::string json = header.dump();
  // Pad the header with spaces so the data starts 8-byte aligned (allowed by the format).
  while ((8 + json.size()) % 8 != 0) json.push_back(' ');

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error(path + ": cannot open for writing: " + std::strerror(errno));
  const uint64_t n = json.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(json.data(), static_cast<std::streamsize>(json.size()));
  for (const auto& t : data)
    out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
  out.flush();
  if (!out) throw std::runtime_error(path + ": write failed: " + std::strerror(errno));
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  if (file_size < 8) fail(path, "shorter than its 8-byte header length");
  unsigned char len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(len[i]) << (8 * i);
  if (header_len > file_size - 8 || header_len > (100u << 20)) fail(path, "header length out of range");
  std::string json(header_len, '\0');
  in.read(json.data(), static_cast<std::streamsize>(header_len));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(json);
  } catch (const std::exception& e) {
    fail(path, std::string("header is not JSON (") + e.what() + ")");
  }
  if (!header.is_object()) fail(path, "header is not a JSON object");
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;

  // Every entry is checked before anything is allocated, so that no header can make us allocate
  // more than the file holds. Non-integer, negative or overflowing numbers, a non-object
  // __metadata__ and overlapping data ranges (one 1 MB range named by thousands of tensors) were
  // all accepted or crashed before (tests/fuzz/fuzz_safetensors, docs/reliability.md).
  struct Entry {
    std::string name;
    torch::ScalarType dtype;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;
  };
  std::vector<Entry> entries;
  SafetensorsFile result;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object()) fail(path, "__metadata__ is not a JSON object");
      for (auto m = it->begin(); m != it->end(); ++m)
        result.metadata[m.key()] = m->is_string() ? m->get<std::string>() : m->dump();
      continue;
    }
    const auto& info = *it;
    const std::string what = "tensor '" + name + "' ";
    if (!info.is_object()) fail(path, what + "is not described by a JSON object");
    Entry e;
    e.name = name;
    const auto dtype = info.find("dtype");
    if (dtype == info.end() || !dtype->is_string() || !name_to_dtype(dtype->get<std::string>(), &e.dtype))
      fail(path, what + "has a missing or unsupported dtype");
    const auto shape = info.find("shape");
    const auto offsets = info.find("data_offsets");
    if (shape == info.end() || !shape->is_array() || offsets == info.end() || !offsets->is_array())
      fail(path, what + "lacks shape or data_offsets");
    // numel, and the product of the non-zero dimensions (LibTorch's strides), must fit an int64.
    uint64_t numel = 1, extent = 1;
    for (const auto& d : *shape) {
      if (d.is_number_integer() && !d.is_number_unsigned()) fail(path, what + "has a negative dimension");
      if (!d.is_number_unsigned()) fail(path, what + "has a dimension that is not an integer");
      const uint64_t dim = d.get<uint64_t>();
      if (__builtin_mul_overflow(extent, std::max<uint64_t>(dim, 1), &extent) ||
          extent > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail(path, what + "has a shape too large to address");
      numel *= dim;  // <= extent, so no overflow
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    if (offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned())
      fail(path, what + "data_offsets is not a pair of non-negative integers");
    e.begin = (*offsets)[0].get<uint64_t>();
    e.end = (*offsets)[1].get<uint64_t>();
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(c10::elementSize(e.dtype)), &bytes) ||
        e.end < e.begin || e.end > data_size || e.end - e.begin != bytes)
      fail(path, what + "data range does not match its shape or the file size");
    entries.push_back(std::move(e));
  }
  std::vector<const Entry*> by_offset;
  for (const auto& e : entries)
    if (e.end > e.begin) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      fail(path, "tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "' overlap");
  }

  for (auto& e : entries) {
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
    in.seekg(static_cast<std::streamoff>(data_start + e.begin));
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(e.end - e.begin));
    if (!in) fail(path, "truncated while reading tensor '" + e.name + "'");
    result.tensors.emplace(std::move(e.name), std::move(t));
  }
  return result;
}

}  // namespace relora::train
