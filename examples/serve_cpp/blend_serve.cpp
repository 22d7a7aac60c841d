// blend_serve: a C++ server for a `blend export --aot` package (an AOTInductor .pt2), built
// against the libtorch inside the torch wheel and nothing else.
//
//   blend_serve PACKAGE [--batch B] [--threads K] < requests.jsonl > answers.jsonl
//   blend_serve PACKAGE --contract
//   blend_serve PACKAGE --bench requests.jsonl [--bench-batch 64] [--bench-repeat 10] ...
//
// It reads the package's contract (`blendspec.json`, kept in the package's AOTInductor metadata),
// refuses a host that cannot run the package (another OS or machine, another torch release, a CPU
// without an instruction-set feature the package was compiled to use), then answers JSON lines:
// one request per line in, one answer (or one error) per request out, in the same order, with the
// request JSON and the answer shape of examples/serve.py. Requests that arrive together (up to B)
// are blended in one call, padded to the contract: N a multiple of `candidate_multiple`, mask
// False on the padding. See examples/serve_cpp/README.md and docs/serving.md ("A C++ server").
//
// Build (README.md): `c++ -std=c++20 -O2 blend_serve.cpp -I$TORCH/include -L$TORCH/lib
// -Wl,-rpath,$TORCH/lib -ltorch -ltorch_cpu -lc10`, or CMake with torch.utils.cmake_prefix_path.

#include <ATen/Parallel.h>
#include <ATen/ops/zeros.h>
#include <c10/core/InferenceMode.h>
#include <poll.h>
#include <sys/utsname.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/headeronly/version.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "blake2b.hpp"
#include "json.hpp"

namespace {

constexpr const char* kContractKey = "blendspec.json";
constexpr const char* kModelName = "model";
constexpr int64_t kMaxBatch = 4096;  // the contract's bounds (blendspec.serve.export)
constexpr int64_t kMaxCandidates = 32 * 1024;
constexpr size_t kMaxLine = size_t(64) << 20;  // examples/serve.py's MAX_BODY_BYTES

// A problem that ends the program with a message (exit 1): the package or the host.
struct Fatal : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A request that does not follow the contract: answered with an error line, never a crash.
struct BadRequest : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string first_line(const std::string& text) {
  auto end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

// --- the contract ------------------------------------------------------------------------------

enum class Kind { Mask, Score, Embedding, SemanticId, Category, Flag, Features, Seed };
enum class DType { Float32, Int64, Bool };

struct InputSpec {
  std::string name;
  Kind kind;
  DType dtype;
  int64_t inner = 1;  // D of embedding[D] / features[D], L of semantic_id[L]
};

struct Contract {
  std::string text;  // blendspec.json as stored
  json::Value raw;
  std::string spec_name, spec_hash;
  int64_t multiple = 32;
  int64_t slate_length = 0;
  std::vector<InputSpec> inputs;
  std::vector<std::string> outputs, weights;
};

const json::Value& member(const json::Value& object, const char* key, json::Type type) {
  const json::Value* v = object.find(key);
  if (v == nullptr || v->type != type) {
    throw Fatal(std::string("its contract has no valid `") + key +
                "` (not written by `blend export --aot`?)");
  }
  return *v;
}

std::string string_or(const json::Value& object, const char* key, const std::string& fallback) {
  const json::Value* v = object.find(key);
  return v != nullptr && v->is_string() ? v->text : fallback;
}

Contract parse_contract(const std::string& text) {
  Contract c;
  c.text = text;
  try {
    c.raw = json::parse(c.text);  // its numbers are views into c.text
  } catch (const json::ParseError& e) {
    throw Fatal(std::string("its contract is not valid JSON: ") + e.what());
  }
  if (!c.raw.is_object()) throw Fatal("its contract is not a JSON object");
  std::string format = string_or(c.raw, "format", "");
  std::string kind = string_or(c.raw, "kind", "exported");
  if (kind != "aoti" || format.rfind("blendspec-aoti/", 0) != 0) {
    throw Fatal("its contract says kind `" + kind + "`, format `" + format +
                "`: this server runs AOTInductor packages (`blend export --aot`)");
  }
  if (format != "blendspec-aoti/1") {
    throw Fatal("its contract format is `" + format + "`; this server reads blendspec-aoti/1");
  }
  c.spec_name = string_or(c.raw, "spec_name", "?");
  c.spec_hash = string_or(c.raw, "spec_hash", "?");
  c.multiple = int64_t(member(c.raw, "candidate_multiple", json::Type::Number).number);
  c.slate_length = int64_t(member(c.raw, "slate_length", json::Type::Number).number);
  if (c.multiple < 1 || c.multiple > kMaxCandidates)
    throw Fatal("its contract has a bad candidate_multiple");
  static const std::map<std::string, Kind> kinds = {
      {"mask", Kind::Mask},           {"score", Kind::Score},
      {"embedding", Kind::Embedding}, {"semantic_id", Kind::SemanticId},
      {"category", Kind::Category},   {"flag", Kind::Flag},
      {"features", Kind::Features},   {"seed", Kind::Seed},
  };
  static const std::map<std::string, DType> dtypes = {
      {"float32", DType::Float32}, {"int64", DType::Int64}, {"bool", DType::Bool}};
  for (const auto& item : member(c.raw, "inputs", json::Type::Array).items) {
    InputSpec spec;
    spec.name = member(item, "name", json::Type::String).text;
    std::string kind_name = member(item, "kind", json::Type::String).text;
    std::string dtype_name = member(item, "dtype", json::Type::String).text;
    auto k = kinds.find(kind_name);
    auto d = dtypes.find(dtype_name);
    if (k == kinds.end() || d == dtypes.end()) {
      throw Fatal("its input `" + spec.name + "` is of kind `" + kind_name + "`, dtype `" +
                  dtype_name + "`, which this server does not know (a newer blendspec?)");
    }
    spec.kind = k->second;
    spec.dtype = d->second;
    // The shape this server builds for each kind, checked against the recorded one.
    const auto& shape = member(item, "shape", json::Type::Array).items;
    std::vector<std::string> want;
    switch (spec.kind) {
      case Kind::Seed: want = {"B"}; break;
      case Kind::Features: want = {"B", "#"}; break;
      case Kind::Embedding:
      case Kind::SemanticId: want = {"B", "N", "#"}; break;
      default: want = {"B", "N"};
    }
    bool ok = shape.size() == want.size();
    for (size_t i = 0; ok && i < want.size(); ++i) {
      if (want[i] == "#") {
        ok = shape[i].is_integer() && shape[i].number >= 1;
        if (ok) spec.inner = int64_t(shape[i].number);
      } else {
        ok = shape[i].is_string() && shape[i].text == want[i];
      }
    }
    if (!ok) throw Fatal("its input `" + spec.name + "` has a shape this server does not expect");
    c.inputs.push_back(spec);
  }
  if (c.inputs.empty() || c.inputs[0].kind != Kind::Mask)
    throw Fatal("its first input is not the mask");
  for (const auto& item : member(c.raw, "outputs", json::Type::Array).items)
    c.outputs.push_back(item.text);
  for (const auto& item : member(c.raw, "weights", json::Type::Array).items)
    c.weights.push_back(item.text);
  for (const char* needed : {"indices", "scores", "utility", "weights"}) {
    if (std::find(c.outputs.begin(), c.outputs.end(), needed) == c.outputs.end()) {
      throw Fatal(std::string("its contract lists no `") + needed + "` output");
    }
  }
  return c;
}

Contract read_contract(const std::string& path) {
  {
    std::ifstream probe(path, std::ios::binary);
    if (!probe) throw Fatal(std::string("cannot open it: ") + std::strerror(errno));
    char magic[4] = {0};
    probe.read(magic, 4);
    if (std::string(magic, 4) != std::string("PK\x03\x04", 4)) {
      throw Fatal("not a .pt2 archive written by `blend export --aot`");
    }
  }
  std::unordered_map<std::string, std::string> metadata;
  try {
    metadata =
        torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, kModelName);
  } catch (const std::exception& e) {
    throw Fatal("not an AOTInductor package (" + first_line(e.what()) +
                "); a plain `blend export` artifact is served by examples/serve.py");
  }
  auto it = metadata.find(kContractKey);
  if (it == metadata.end()) {
    throw Fatal("no blendspec.json in its metadata: not written by `blend export --aot`");
  }
  return parse_contract(it->second);
}

// --- the host check (as blendspec.serve.export.check_host)
// ----------------------------------------

std::optional<std::set<std::string>> cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  if (!in) return std::nullopt;
  std::string line;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    key.erase(key.find_last_not_of(" \t") + 1);
    if (key == "flags" || key == "Features") {
      std::istringstream words(line.substr(colon + 1));
      std::set<std::string> out;
      for (std::string w; words >> w;) out.insert(w);
      return out;
    }
  }
  return std::nullopt;
}

// Without /proc/cpuinfo: what the compiler's CPU detection answers for (the rest is assumed).
std::optional<bool> probe_feature(const std::string& name) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (name == "avx2") return __builtin_cpu_supports("avx2") != 0;
  if (name == "avx512f") return __builtin_cpu_supports("avx512f") != 0;
  if (name == "fma") return __builtin_cpu_supports("fma") != 0;
#endif
  (void)name;
  return std::nullopt;
}

void check_host(const Contract& c) {
  const json::Value* target = c.raw.find("target");
  if (target == nullptr || !target->is_object()) throw Fatal("its contract has no `target`");
  struct utsname host{};
  uname(&host);
  std::string built = string_or(*target, "system", "?") + "/" + string_or(*target, "machine", "?");
  std::string here = std::string(host.sysname) + "/" + host.machine;
  if (built != here) {
    throw Fatal("this AOTInductor package was compiled for " + built + "; this host is " + here +
                " (export it again on the serving platform)");
  }
  std::string recorded = string_or(c.raw, "torch_version", "?");
  std::string release = recorded.substr(0, recorded.find('+'));
  if (release != TORCH_VERSION) {
    throw Fatal("this AOTInductor package was compiled against torch " + recorded +
                "; this server runs libtorch " + TORCH_VERSION +
                " (export it again with the serving torch, or build this server against torch " +
                release + ")");
  }
  std::vector<std::string> missing;
  auto flags = cpu_flags();
  if (const json::Value* features = target->find("cpu_features");
      features && features->is_array()) {
    for (const auto& f : features->items) {
      if (!f.is_string()) continue;
      bool present = flags ? flags->count(f.text) > 0 : probe_feature(f.text).value_or(true);
      if (!present) missing.push_back(f.text);
    }
  }
  if (!missing.empty()) {
    std::string isa = string_or(*target, "isa", "?");
    std::string list;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    std::string hint = isa != "avx2" ? "export it with `--isa avx2` for a portable x86-64 build"
                                     : "it needs an x86-64-v3 CPU (AVX2, FMA, BMI2)";
    throw Fatal("this AOTInductor package was compiled for the `" + isa + "` instruction set (" +
                string_or(*target, "vec_isa", "?") +
                " vectors, -march=" + string_or(*target, "march", "?") + ") and this CPU lacks " +
                list + ": it would crash on an illegal instruction; " + hint);
  }
}

// --- requests --------------------------------------------------------------------------------

// One input of one request, in the dtype the contract names (only one vector is used).
struct Column {
  std::vector<float> f;
  std::vector<int64_t> i;
  std::vector<uint8_t> b;
};

struct Request {
  std::string id;
  int64_t n = 0;                           // candidates
  std::vector<std::string> candidate_ids;  // each candidate's `candidate_id`, as JSON text
  std::vector<Column> columns;             // one per contract input
};

std::string short_json(const json::Value& v) {
  std::string text = json::dump(v);
  return text.size() > 40 ? text.substr(0, 37) + "..." : text;
}

// The request id as examples/serve.py's str(request["request_id"]) gives it, for the id types a
// server meets (a string or an integer); anything else is refused rather than guessed.
std::string request_id_of(const json::Value& request) {
  const json::Value* id = request.is_object() ? request.find("request_id") : nullptr;
  if (id == nullptr) throw BadRequest("every request needs a `request_id`");
  if (id->is_string()) return id->text;
  if (id->is_integer()) return id->literal == "-0" ? "0" : std::string(id->literal);
  throw BadRequest(std::string("`request_id` must be a string or an integer, got ") +
                   short_json(*id));
}

class Encoder {
 public:
  explicit Encoder(const Contract& c) : c_(c) {}

  // The request's columns, checked against the contract; BadRequest names the request and field.
  Request encode(const json::Value& body) const {
    Request r;
    r.id = request_id_of(body);
    const json::Value* candidates = body.find("candidates");
    if (candidates == nullptr || !candidates->is_array()) {
      throw BadRequest(where(r) + " has no `candidates` list");
    }
    const auto& rows = candidates->items;
    r.n = int64_t(rows.size());
    if (r.n > kMaxCandidates) {
      throw BadRequest(where(r) + " has " + std::to_string(r.n) +
                       " candidates; the package takes at most " + std::to_string(kMaxCandidates));
    }
    for (int64_t j = 0; j < r.n; ++j) {
      if (!rows[size_t(j)].is_object()) {
        throw BadRequest(where(r) + ": candidates[" + std::to_string(j) + "] is not an object");
      }
      const json::Value* cid = rows[size_t(j)].find("candidate_id");
      r.candidate_ids.push_back(cid ? json::dump(*cid) : "null");
    }
    r.columns.resize(c_.inputs.size());
    for (size_t k = 0; k < c_.inputs.size(); ++k)
      encode_input(c_.inputs[k], body, rows, r, r.columns[k]);
    return r;
  }

 private:
  const Contract& c_;

  static std::string where(const Request& r) { return "request `" + r.id + "`"; }

  static const json::Value& field(const json::Value& candidate, const std::string& name,
                                  const Request& r, size_t j) {
    const json::Value* v = candidate.find(name);
    if (v == nullptr)
      throw BadRequest(where(r) + ": candidates[" + std::to_string(j) + "] has no `" + name + "`");
    return *v;
  }

  // `what()` names the value in the error message; it is only called on an error (a request
  // holds hundreds of thousands of embedding values).
  template <typename What>
  static float finite(const json::Value& v, const What& what, const Request& r) {
    if (!v.is_number() || !std::isfinite(v.number)) {
      throw BadRequest(where(r) + ": " + what() + " must be a finite number, got " + short_json(v));
    }
    return float(v.number);  // Python's float() then torch's float32: the same rounding
  }

  template <typename What>
  static int64_t integer(const json::Value& v, const What& what, const Request& r) {
    if (v.is_integer()) {
      int64_t out = 0;
      auto [end, ec] = std::from_chars(v.literal.data(), v.literal.data() + v.literal.size(), out);
      if (ec == std::errc() && end == v.literal.data() + v.literal.size()) return out;
    }
    throw BadRequest(where(r) + ": " + what() + " must be an int64 integer, got " + short_json(v));
  }

  void encode_input(const InputSpec& spec, const json::Value& body,
                    const std::vector<json::Value>& rows, const Request& r, Column& out) const {
    const std::string& name = spec.name;
    switch (spec.kind) {
      case Kind::Mask: return;  // built from n when the batch is padded
      case Kind::Seed: out.i.push_back(blake2b::request_seed(r.id)); return;
      case Kind::Features: {
        const json::Value* v = body.find(name);
        if (v == nullptr || !v->is_array() || int64_t(v->items.size()) != spec.inner) {
          throw BadRequest(where(r) + ": `" + name + "` must be a list of " +
                           std::to_string(spec.inner) + " numbers");
        }
        for (size_t d = 0; d < v->items.size(); ++d) {
          auto what = [&] { return "`" + name + "`[" + std::to_string(d) + "]"; };
          out.f.push_back(finite(v->items[d], what, r));
        }
        return;
      }
      case Kind::Category: {
        // Codes 0, 1, 2, ... by first appearance within the request, as `blend run` numbers
        // them; a string and an integer are different labels (as in a Python dict).
        std::unordered_map<std::string, int64_t> codes;
        for (size_t j = 0; j < rows.size(); ++j) {
          const json::Value& label = field(rows[j], name, r, j);
          std::string key;
          if (label.is_string()) {
            key = "s" + label.text;
          } else if (label.is_integer()) {
            key = "i" + (label.literal == "-0" ? std::string("0") : std::string(label.literal));
          } else {
            throw BadRequest(where(r) + ": candidates[" + std::to_string(j) + "]: category `" +
                             name + "` must be a string or an integer, got " + short_json(label));
          }
          auto [it, added] = codes.emplace(std::move(key), int64_t(codes.size()));
          out.i.push_back(it->second);
        }
        return;
      }
      case Kind::Embedding:
      case Kind::SemanticId: {
        bool ints = spec.kind == Kind::SemanticId;
        (ints ? out.i.reserve(rows.size() * size_t(spec.inner))
              : out.f.reserve(rows.size() * size_t(spec.inner)));
        for (size_t j = 0; j < rows.size(); ++j) {
          const json::Value& v = field(rows[j], name, r, j);
          if (!v.is_array() || int64_t(v.items.size()) != spec.inner) {
            throw BadRequest(where(r) + ": candidates[" + std::to_string(j) + "]: `" + name +
                             "` must be a list of " + std::to_string(spec.inner) +
                             (ints ? " integers" : " numbers"));
          }
          for (const auto& x : v.items) {
            auto what = [&] { return "`" + name + "` of candidates[" + std::to_string(j) + "]"; };
            if (ints)
              out.i.push_back(integer(x, what, r));
            else
              out.f.push_back(finite(x, what, r));
          }
        }
        return;
      }
      case Kind::Flag:
        for (size_t j = 0; j < rows.size(); ++j)
          out.b.push_back(field(rows[j], name, r, j).truthy() ? 1 : 0);
        return;
      case Kind::Score:
        for (size_t j = 0; j < rows.size(); ++j) {
          auto what = [&] { return "`" + name + "` of candidates[" + std::to_string(j) + "]"; };
          out.f.push_back(finite(field(rows[j], name, r, j), what, r));
        }
        return;
    }
  }
};

// --- a batch: padded tensors in, answers out -----------------------------------------------------

class Blender {
 public:
  Blender(const std::string& path, const Contract& c)
      : c_(c), loader_(path, kModelName, false, 1, -1) {}

  // The package's positional inputs for `batch`: B rows, N the smallest multiple of the
  // contract's candidate_multiple that holds the largest request, zeros (mask False) as padding.
  std::vector<at::Tensor> inputs(const std::vector<const Request*>& batch) const {
    int64_t most = 0;
    for (const Request* r : batch) most = std::max(most, r->n);
    int64_t width = std::max(c_.multiple, (most + c_.multiple - 1) / c_.multiple * c_.multiple);
    int64_t rows = int64_t(batch.size());
    std::vector<at::Tensor> out;
    for (size_t k = 0; k < c_.inputs.size(); ++k) {
      const InputSpec& spec = c_.inputs[k];
      std::vector<int64_t> dims;
      int64_t per_candidate = 0;  // values per candidate (0: a request-level input)
      switch (spec.kind) {
        case Kind::Seed: dims = {rows}; break;
        case Kind::Features: dims = {rows, spec.inner}; break;
        case Kind::Embedding:
        case Kind::SemanticId: dims = {rows, width, spec.inner}, per_candidate = spec.inner; break;
        default: dims = {rows, width}, per_candidate = 1;
      }
      at::ScalarType type = spec.dtype == DType::Float32 ? at::kFloat
                            : spec.dtype == DType::Int64 ? at::kLong
                                                         : at::kBool;
      at::Tensor t = at::zeros(dims, at::TensorOptions().dtype(type));  // contiguous
      int64_t stride =
          per_candidate ? width * per_candidate : (spec.kind == Kind::Seed ? 1 : spec.inner);
      auto* base = static_cast<char*>(t.data_ptr());
      size_t item = t.element_size();
      for (int64_t row = 0; row < rows; ++row) {
        const Request& r = *batch[size_t(row)];
        char* dst = base + size_t(row * stride) * item;
        if (spec.kind == Kind::Mask) {
          std::fill(reinterpret_cast<bool*>(dst), reinterpret_cast<bool*>(dst) + r.n, true);
          continue;
        }
        const Column& col = r.columns[k];
        if (spec.dtype == DType::Float32)
          std::copy(col.f.begin(), col.f.end(), reinterpret_cast<float*>(dst));
        else if (spec.dtype == DType::Int64)
          std::copy(col.i.begin(), col.i.end(), reinterpret_cast<int64_t*>(dst));
        else
          std::transform(col.b.begin(), col.b.end(), reinterpret_cast<bool*>(dst),
                         [](uint8_t x) { return x != 0; });
      }
      out.push_back(std::move(t));
    }
    return out;
  }

  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs) {
    c10::InferenceMode guard;
    return loader_.run(inputs);
  }

  // One JSON answer per request: examples/serve.py's shape.
  std::vector<std::string> answers(const std::vector<const Request*>& batch,
                                   const std::vector<at::Tensor>& results) const {
    if (results.size() != c_.outputs.size()) {
      throw std::runtime_error("the package returned " + std::to_string(results.size()) +
                               " outputs; its contract lists " + std::to_string(c_.outputs.size()));
    }
    std::map<std::string, at::Tensor> out;
    for (size_t k = 0; k < results.size(); ++k) out[c_.outputs[k]] = results[k].contiguous();
    const at::Tensor& indices = out["indices"];
    const at::Tensor& utility = out["utility"];
    const at::Tensor& scores = out["scores"];
    const at::Tensor& weights = out["weights"];
    if (indices.scalar_type() != at::kLong || utility.scalar_type() != at::kFloat ||
        scores.scalar_type() != at::kFloat || weights.scalar_type() != at::kFloat ||
        indices.dim() != 2 || weights.dim() != 2 || indices.size(0) != int64_t(batch.size()) ||
        weights.size(1) != int64_t(c_.weights.size())) {
      throw std::runtime_error(
          "the package's outputs do not have the contract's dtypes and shapes");
    }
    int64_t slate = indices.size(1);
    std::vector<std::string> lines;
    for (size_t row = 0; row < batch.size(); ++row) {
      const Request& r = *batch[row];
      std::string s = "{\"request_id\": ";
      json::write_string(s, r.id);
      s += ", \"slate\": [";
      const int64_t* idx = indices.data_ptr<int64_t>() + row * slate;
      const float* util = utility.data_ptr<float>() + row * slate;
      const float* score = scores.data_ptr<float>() + row * slate;
      for (int64_t p = 0; p < slate && idx[p] >= 0; ++p) {
        if (idx[p] >= r.n) throw std::runtime_error("the package picked a padding slot");
        if (p) s += ", ";
        s += "{\"position\": ";
        json::write_int(s, p);
        s += ", \"candidate_id\": " + r.candidate_ids[size_t(idx[p])] + ", \"utility\": ";
        json::write_number(s, double(util[p]));
        s += ", \"score\": ";
        json::write_number(s, double(score[p]));
        s += '}';
      }
      s += "], \"weights\": {";
      const float* w = weights.data_ptr<float>() + row * weights.size(1);
      for (size_t k = 0; k < c_.weights.size(); ++k) {
        if (k) s += ", ";
        json::write_string(s, c_.weights[k]);
        s += ": ";
        json::write_number(s, double(w[k]));
      }
      s += '}';
      for (const auto& name : c_.outputs) {  // per-request outputs: cap_violations, action, ...
        const at::Tensor& t = out[name];
        if (t.dim() != 1) continue;
        s += ", ";
        json::write_string(s, name);
        s += ": ";
        switch (t.scalar_type()) {
          case at::kBool: s += t.data_ptr<bool>()[row] ? "true" : "false"; break;
          case at::kLong: json::write_int(s, t.data_ptr<int64_t>()[row]); break;
          case at::kInt: json::write_int(s, t.data_ptr<int32_t>()[row]); break;
          case at::kFloat: json::write_number(s, double(t.data_ptr<float>()[row])); break;
          case at::kDouble: json::write_number(s, t.data_ptr<double>()[row]); break;
          default: s += "null";
        }
      }
      s += '}';
      lines.push_back(std::move(s));
    }
    return lines;
  }

 private:
  const Contract& c_;
  torch::inductor::AOTIModelPackageLoader loader_;
};

std::string error_line(size_t line, const std::string* request_id, const std::string& message) {
  std::string s = "{\"request_id\": ";
  if (request_id)
    json::write_string(s, *request_id);
  else
    s += "null";
  s += ", \"line\": ";
  json::write_int(s, int64_t(line));
  s += ", \"error\": ";
  json::write_string(s, message);
  s += '}';
  return s;
}

// One input line to a request or an error line naming the line and, when known, the request.
struct Pending {
  size_t line = 0;
  std::optional<Request> request;
  std::string error;    // the whole error line when `request` is empty
  std::string message;  // and its message alone
};

Pending decode(const Encoder& encoder, size_t line_no, std::string_view line) {
  Pending p;
  p.line = line_no;
  json::Value body;
  try {
    body = json::parse(line);
  } catch (const json::ParseError& e) {
    p.message = "line " + std::to_string(line_no) + " is not valid JSON: " + e.what() +
                " at column " + std::to_string(e.offset + 1);
    p.error = error_line(line_no, nullptr, p.message);
    return p;
  }
  std::optional<std::string> id;
  try {
    id = request_id_of(body);
    p.request = encoder.encode(body);
  } catch (const BadRequest& e) {
    p.message = e.what();
    p.error = error_line(line_no, id ? &*id : nullptr, p.message);
  }
  return p;
}

// Answers for `pending` in order: the good requests blended in one call, the bad ones' errors.
std::vector<std::string> answer(Blender& blender, const std::vector<Pending>& pending) {
  std::vector<const Request*> batch;
  for (const auto& p : pending) {
    if (p.request) batch.push_back(&*p.request);
  }
  std::vector<std::string> good;
  std::string failure;
  if (!batch.empty()) {
    try {
      good = blender.answers(batch, blender.run(blender.inputs(batch)));
    } catch (const std::exception& e) {  // the package failed: every request of the call says so
      failure = "the package failed on this batch: " + first_line(e.what());
    }
  }
  std::vector<std::string> lines;
  size_t next = 0;
  for (const auto& p : pending) {
    if (!p.request)
      lines.push_back(p.error);
    else if (!failure.empty())
      lines.push_back(error_line(p.line, &p.request->id, failure));
    else
      lines.push_back(good[next++]);
  }
  return lines;
}

std::string answer_line(const Blender& blender, const Pending& p,
                        const std::vector<at::Tensor>& out) {
  return blender.answers({&*p.request}, out)[0];
}

// --- stdin: lines, and whether more are ready without waiting ------------------------------------

class LineReader {
 public:
  enum Status { kLine, kWouldBlock, kEnd };

  // The next line; with `block` false, kWouldBlock when no whole line is ready. A line longer
  // than kMaxLine comes back empty with `too_long` set (its bytes are skipped).
  Status next(std::string& line, bool block, bool& too_long) {
    too_long = false;
    for (;;) {
      size_t end = buf_.find('\n', start_);
      if (end != std::string::npos) {
        if (skipping_) {
          skipping_ = false;
          start_ = end + 1;
          too_long = true;
          line.clear();
          return kLine;
        }
        line.assign(buf_, start_, end - start_);
        start_ = end + 1;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return kLine;
      }
      if (buf_.size() - start_ > kMaxLine) {
        skipping_ = true;
        buf_.clear();
        start_ = 0;
      }
      if (eof_) {
        if (start_ < buf_.size() || skipping_) {
          too_long = skipping_;
          skipping_ = false;
          line.assign(buf_, start_, std::string::npos);
          if (too_long) line.clear();
          buf_.clear();
          start_ = 0;
          return kLine;
        }
        return kEnd;
      }
      if (!block) {
        pollfd fd{0, POLLIN, 0};
        if (poll(&fd, 1, 0) <= 0) return kWouldBlock;
      }
      if (start_ > 0 && start_ * 2 > buf_.size()) {
        buf_.erase(0, start_);
        start_ = 0;
      }
      char chunk[1 << 16];
      ssize_t got = ::read(0, chunk, sizeof chunk);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0)
        eof_ = true;
      else
        buf_.append(chunk, size_t(got));
    }
  }

 private:
  std::string buf_;
  size_t start_ = 0;
  bool eof_ = false;
  bool skipping_ = false;
};

int serve(Blender& blender, const Encoder& encoder, int64_t max_batch) {
  LineReader reader;
  std::string line;
  size_t line_no = 0;
  for (;;) {
    std::vector<Pending> pending;
    bool ended = false;
    int64_t requests = 0;
    // Wait for one line, then take whatever else is already there, up to B requests.
    while (requests < max_batch) {
      bool too_long = false;
      auto status = reader.next(line, pending.empty(), too_long);
      if (status == LineReader::kEnd) {
        ended = true;
        break;
      }
      if (status == LineReader::kWouldBlock) break;
      ++line_no;
      if (too_long) {
        Pending p;
        p.line = line_no;
        p.error = error_line(line_no, nullptr,
                             "line " + std::to_string(line_no) + " is longer than " +
                                 std::to_string(kMaxLine >> 20) + " MiB");
        pending.push_back(std::move(p));
        continue;
      }
      if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank lines
      pending.push_back(decode(encoder, line_no, line));
      if (pending.back().request) ++requests;
    }
    if (!pending.empty()) {
      std::string text;
      for (const auto& l : answer(blender, pending)) text += l + "\n";
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    }
    if (ended) return 0;
  }
}

// --- the benchmark
// --------------------------------------------------------------------------------

double percentile(std::vector<double> values, double q) {  // as benchmarks/bench_export.py
  std::sort(values.begin(), values.end());
  auto i = int64_t(std::nearbyint(q * double(values.size() - 1)));
  return values[size_t(std::clamp<int64_t>(i, 0, int64_t(values.size()) - 1))];
}

double median(std::vector<double> values) {  // statistics.median
  std::sort(values.begin(), values.end());
  size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

struct BenchOptions {
  std::string requests, answers;
  int64_t batch = 64, repeat = 10, end_to_end_repeat = 3, singles = 0, warmup = 3;
};

int bench(Blender& blender, const Encoder& encoder, const Contract& c, const BenchOptions& o,
          double load_ms) {
  std::ifstream in(o.requests, std::ios::binary);
  if (!in) throw Fatal("cannot read " + o.requests + ": " + std::strerror(errno));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) lines.push_back(line);
  }
  if (lines.empty()) throw Fatal(o.requests + " holds no requests");
  for (size_t k = 0; k < lines.size(); ++k) {  // every request must be good before timing
    Pending p = decode(encoder, k + 1, lines[k]);
    if (!p.request) throw Fatal(o.requests + ", line " + std::to_string(k + 1) + ": " + p.message);
  }
  using clock = std::chrono::steady_clock;
  size_t singles = o.singles > 0 ? size_t(o.singles) : lines.size();
  std::vector<std::string> batch_lines;
  for (int64_t k = 0; k < o.batch; ++k) batch_lines.push_back(lines[size_t(k) % lines.size()]);
  std::vector<Pending> batch;
  for (size_t k = 0; k < batch_lines.size(); ++k)
    batch.push_back(decode(encoder, k + 1, batch_lines[k]));
  std::vector<const Request*> batch_requests;
  for (const auto& p : batch) batch_requests.push_back(&*p.request);
  auto batch_inputs = blender.inputs(batch_requests);
  for (int64_t k = 0; k < o.warmup; ++k) {  // the first calls are slower (allocations, pages)
    Pending p = decode(encoder, 1, lines[size_t(k) % lines.size()]);
    blender.run(blender.inputs({&*p.request}));
    blender.run(batch_inputs);
  }
  std::ofstream answers;
  if (!o.answers.empty()) {
    answers.open(o.answers);
    if (!answers) throw Fatal("cannot write " + o.answers);
  }
  // B=1: each request alone. `model` is the package call on ready tensors (what
  // bench_export.py times for the Python loaders); `end_to_end` adds parsing the JSON line,
  // padding it into tensors and writing the answer line.
  std::vector<double> model_ms, e2e_ms;
  for (size_t k = 0; k < singles; ++k) {
    auto t0 = clock::now();
    Pending p = decode(encoder, k + 1, lines[k % lines.size()]);
    auto inputs = blender.inputs({&*p.request});
    auto t1 = clock::now();
    auto out = blender.run(inputs);
    double model = ms_since(t1);
    std::string line = answer_line(blender, p, out);
    e2e_ms.push_back(ms_since(t0));
    model_ms.push_back(model);
    if (answers) answers << line << '\n';
  }
  // Batch: the same B requests, best of the repetitions (as bench_export.py); end to end, best
  // of fewer (parsing a batch of large requests takes longer than running it).
  double best = HUGE_VAL, best_e2e = HUGE_VAL;
  for (int64_t k = 0; k < o.repeat; ++k) {
    auto t0 = clock::now();
    blender.run(batch_inputs);
    best = std::min(best, ms_since(t0));
  }
  for (int64_t k = 0; k < o.end_to_end_repeat; ++k) {
    auto t0 = clock::now();
    std::vector<Pending> again;
    for (size_t j = 0; j < batch_lines.size(); ++j)
      again.push_back(decode(encoder, j + 1, batch_lines[j]));
    answer(blender, again);
    best_e2e = std::min(best_e2e, ms_since(t0));
  }
  std::string s = "{\"server\": \"examples/serve_cpp\", \"spec_name\": ";
  json::write_string(s, c.spec_name);
  s += ", \"spec_hash\": ";
  json::write_string(s, c.spec_hash);
  const json::Value* target = c.raw.find("target");
  s += ", \"isa\": ";
  json::write_string(s, target ? string_or(*target, "isa", "?") : "?");
  s += ", \"threads\": ";
  json::write_int(s, at::get_num_threads());
  s += ", \"load_ms\": ";
  json::write_number(s, load_ms);
  s += ", \"requests\": ";
  json::write_int(s, int64_t(singles));
  s += ", \"b1_p50_ms\": ";
  json::write_number(s, median(model_ms));
  s += ", \"b1_p99_ms\": ";
  json::write_number(s, percentile(model_ms, 0.99));
  s += ", \"b1_end_to_end_p50_ms\": ";
  json::write_number(s, median(e2e_ms));
  s += ", \"b1_end_to_end_p99_ms\": ";
  json::write_number(s, percentile(e2e_ms, 0.99));
  s += ", \"batch\": ";
  json::write_int(s, o.batch);
  s += ", \"batch_width\": ";
  json::write_int(s, batch_inputs[0].size(1));
  s += ", \"batch_repeat\": ";
  json::write_int(s, o.repeat);
  s += ", \"batch_best_ms\": ";
  json::write_number(s, best);
  s += ", \"batch_requests_per_s\": ";
  json::write_number(s, double(o.batch) * 1e3 / best);
  s += ", \"batch_end_to_end_requests_per_s\": ";
  if (o.end_to_end_repeat > 0)
    json::write_number(s, double(o.batch) * 1e3 / best_e2e);
  else
    s += "null";
  s += "}\n";
  std::fwrite(s.data(), 1, s.size(), stdout);
  return 0;
}

// --- the command line -------------------------------------------------------------------------

constexpr const char* kUsage =
    "usage: blend_serve PACKAGE [--batch B] [--threads K]  (JSON lines in, answers out)\n"
    "       blend_serve PACKAGE --contract                 (print the package's blendspec.json)\n"
    "       blend_serve --request-seed ID                  (the @request_seed of a request id)\n"
    "       blend_serve PACKAGE --bench REQUESTS.jsonl [--bench-batch B] [--bench-repeat R]\n"
    "           [--bench-end-to-end-repeat E] [--bench-requests S] [--bench-warmup W]\n"
    "           [--bench-answers FILE] [--threads K]\n"
    "\n"
    "PACKAGE is a `blend export --aot` package. Serving: one request per line (the JSON of\n"
    "examples/serve.py), one answer or {\"error\": ...} line per request, in order; requests that\n"
    "are already waiting are blended together, at most B per call (default 64, at most 4096).\n"
    "--threads K sets torch's intra-op threads (default: torch's). --bench prints one JSON line:\n"
    "B=1 p50/p99 ms over the file's requests one at a time (the package call, and end to end),\n"
    "and requests/s of a batch of B of them (best of R calls; end to end, best of E, default 3,\n"
    "0 to skip). See examples/serve_cpp/README.md.\n";

int64_t int_flag(const std::string& flag, const char* value, int64_t low, int64_t high) {
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(value, &end, 10);
  if (errno || end == value || *end || x < low || x > high) {
    throw std::invalid_argument(flag + " takes an integer in [" + std::to_string(low) + ", " +
                                std::to_string(high) + "], got `" + value + "`");
  }
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  std::string package;
  int64_t max_batch = 64, threads = 0;
  bool contract_only = false;
  BenchOptions bench_options;
  try {
    for (int k = 1; k < argc; ++k) {
      std::string a = argv[k];
      auto value = [&]() -> const char* {
        if (k + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        return argv[++k];
      };
      if (a == "-h" || a == "--help") {
        std::fputs(kUsage, stdout);
        return 0;
      } else if (a == "--batch") {
        max_batch = int_flag(a, value(), 1, kMaxBatch);
      } else if (a == "--threads") {
        threads = int_flag(a, value(), 1, 4096);
      } else if (a == "--request-seed") {
        std::printf("%lld\n", (long long)blake2b::request_seed(value()));
        return 0;
      } else if (a == "--contract") {
        contract_only = true;
      } else if (a == "--bench") {
        bench_options.requests = value();
      } else if (a == "--bench-batch") {
        bench_options.batch = int_flag(a, value(), 1, kMaxBatch);
      } else if (a == "--bench-end-to-end-repeat") {
        bench_options.end_to_end_repeat = int_flag(a, value(), 0, 1000000);
      } else if (a == "--bench-repeat") {
        bench_options.repeat = int_flag(a, value(), 1, 1000000);
      } else if (a == "--bench-requests") {
        bench_options.singles = int_flag(a, value(), 1, 100000000);
      } else if (a == "--bench-warmup") {
        bench_options.warmup = int_flag(a, value(), 0, 1000000);
      } else if (a == "--bench-answers") {
        bench_options.answers = value();
      } else if (!a.empty() && a[0] == '-') {
        throw std::invalid_argument("unknown option " + a);
      } else if (package.empty()) {
        package = a;
      } else {
        throw std::invalid_argument("one package only (got `" + package + "` and `" + a + "`)");
      }
    }
    if (package.empty())
      throw std::invalid_argument("which package? (a `blend export --aot` .pt2)");
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "error: %s\n%s", e.what(), kUsage);
    return 2;
  }
  try {
    Contract contract;
    try {
      contract = read_contract(package);
      if (contract_only) {
        std::fputs(contract.text.c_str(), stdout);
        return 0;
      }
      check_host(contract);  // before the package's library is loaded: a missing ISA is a SIGILL
    } catch (const Fatal& e) {
      throw Fatal("cannot load " + package + ": " + e.what());
    }
    if (threads > 0) at::set_num_threads(int(threads));
    auto started = std::chrono::steady_clock::now();
    std::optional<Blender> blender;
    try {
      blender.emplace(package, contract);
    } catch (const std::exception& e) {
      throw Fatal("cannot load " + package + ": " + first_line(e.what()));
    }
    double load_ms = ms_since(started);
    Encoder encoder(contract);
    if (!bench_options.requests.empty())
      return bench(*blender, encoder, contract, bench_options, load_ms);
    std::fprintf(stderr, "serving %s (spec hash %s, slate %lld) from %s: JSON lines on stdin\n",
                 contract.spec_name.c_str(), contract.spec_hash.c_str(),
                 (long long)contract.slate_length, package.c_str());
    return serve(*blender, encoder, max_batch);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", first_line(e.what()).c_str());
    return 1;
  }
}
