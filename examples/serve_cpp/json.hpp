// A small JSON reader and writer for blend_serve: requests in, answers out, the contract read.
//
// Why not a library: the example must build with nothing but a C++ compiler and the libtorch the
// torch wheel ships (libtorch has no public JSON API), and the subset a server needs is small.
// What it follows, so that requests parse the way `json.loads` in examples/serve.py parses them:
//   * RFC 8259 text, plus Python's NaN / Infinity / -Infinity literals (json.dumps writes them);
//   * duplicate keys: the last one wins (a Python dict);
//   * numbers keep their source text: an integer is a number without '.', 'e' or 'E' (Python's
//     int), and a candidate id is written back exactly as it came (no rounding through double).
//     That text is a view into the parsed line (no allocation per number: a request holds
//     hundreds of thousands of embedding values), so a Value must not outlive its text;
//   * \uXXXX escapes, surrogate pairs included, become UTF-8.
// Nesting is limited (kMaxDepth) so that a hostile line is an error, not a stack overflow.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace json {

class ParseError : public std::runtime_error {
 public:
  ParseError(const std::string& what, size_t offset) : std::runtime_error(what), offset(offset) {}
  size_t offset;  // 0-based byte offset into the text
};

enum class Type { Null, Bool, Number, String, Array, Object };

class Value {
 public:
  Type type = Type::Null;
  bool boolean = false;
  double number = 0.0;
  std::string text;          // a string's characters
  std::string_view literal;  // a number's source text (a view into the parsed text)
  std::vector<Value> items;  // an array's elements
  std::vector<std::pair<std::string, Value>> members;  // an object's members, in order

  bool is_null() const { return type == Type::Null; }
  bool is_bool() const { return type == Type::Bool; }
  bool is_number() const { return type == Type::Number; }
  bool is_string() const { return type == Type::String; }
  bool is_array() const { return type == Type::Array; }
  bool is_object() const { return type == Type::Object; }

  // Python's int: a number written without a fraction or an exponent (NaN/Infinity are floats).
  bool is_integer() const {
    if (type != Type::Number) return false;
    for (char c : literal) {
      if (c == '.' || c == 'e' || c == 'E' || c == 'N' || c == 'I') return false;
    }
    return true;
  }

  // The member `key` (the last one when repeated, as a Python dict keeps it), or nullptr.
  const Value* find(std::string_view key) const {
    if (type != Type::Object) return nullptr;
    for (auto it = members.rbegin(); it != members.rend(); ++it) {
      if (it->first == key) return &it->second;
    }
    return nullptr;
  }

  // Python's truth value of the parsed object (`bool(value)` in examples/serve.py).
  bool truthy() const {
    switch (type) {
      case Type::Null: return false;
      case Type::Bool: return boolean;
      case Type::Number: return number != 0.0;  // NaN is truthy in Python, and here
      case Type::String: return !text.empty();
      case Type::Array: return !items.empty();
      case Type::Object: return !members.empty();
    }
    return false;
  }
};

namespace detail {

constexpr int kMaxDepth = 256;

class Parser {
 public:
  explicit Parser(std::string_view text) : s_(text) {}

  Value parse_document() {
    Value v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("extra data after the JSON value");
    return v;
  }

 private:
  std::string_view s_;
  size_t pos_ = 0;

  [[noreturn]] void fail(const std::string& what) const { throw ParseError(what, pos_); }

  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool consume(std::string_view word) {
    if (s_.substr(pos_, word.size()) == word) {
      pos_ += word.size();
      return true;
    }
    return false;
  }

  Value parse_value(int depth) {
    if (depth > kMaxDepth) fail("nested too deeply");
    skip_ws();
    if (pos_ >= s_.size()) fail("unexpected end of the line");
    Value v;
    char c = s_[pos_];
    if (c == '{') {
      v.type = Type::Object;
      ++pos_;
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == '}') {
        ++pos_;
        return v;
      }
      for (;;) {
        skip_ws();
        if (pos_ >= s_.size() || s_[pos_] != '"') fail("expected a string key");
        std::string key = parse_string();
        skip_ws();
        if (pos_ >= s_.size() || s_[pos_] != ':') fail("expected ':' after a key");
        ++pos_;
        v.members.emplace_back(std::move(key), parse_value(depth + 1));
        skip_ws();
        if (pos_ < s_.size() && s_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < s_.size() && s_[pos_] == '}') {
          ++pos_;
          return v;
        }
        fail("expected ',' or '}' in an object");
      }
    }
    if (c == '[') {
      v.type = Type::Array;
      ++pos_;
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ']') {
        ++pos_;
        return v;
      }
      for (;;) {
        v.items.push_back(parse_value(depth + 1));
        skip_ws();
        if (pos_ < s_.size() && s_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < s_.size() && s_[pos_] == ']') {
          ++pos_;
          return v;
        }
        fail("expected ',' or ']' in an array");
      }
    }
    if (c == '"') {
      v.type = Type::String;
      v.text = parse_string();
      return v;
    }
    if (consume("true")) {
      v.type = Type::Bool;
      v.boolean = true;
      return v;
    }
    if (consume("false")) {
      v.type = Type::Bool;
      return v;
    }
    if (consume("null")) return v;
    if (consume("NaN")) return special(std::nan(""), "NaN");
    if (consume("Infinity")) return special(HUGE_VAL, "Infinity");
    if (consume("-Infinity")) return special(-HUGE_VAL, "-Infinity");
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7F) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", unsigned(static_cast<unsigned char>(c)));
      fail(std::string("unexpected byte ") + hex);
    }
    fail(std::string("unexpected character '") + c + "'");
  }

  static Value special(double x, const char* text) {
    Value v;
    v.type = Type::Number;
    v.number = x;
    v.literal = text;
    return v;
  }

  Value parse_number() {
    size_t start = pos_;
    if (s_[pos_] == '-') ++pos_;
    auto digits = [&] {
      size_t from = pos_;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
      return pos_ - from;
    };
    if (pos_ < s_.size() && s_[pos_] == '0') {
      ++pos_;  // JSON allows no leading zeros
    } else if (digits() == 0) {
      fail("expected a digit");
    }
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      if (digits() == 0) fail("expected a digit after '.'");
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (digits() == 0) fail("expected a digit in the exponent");
    }
    Value v;
    v.type = Type::Number;
    v.literal = s_.substr(start, pos_ - start);
    auto [end, ec] =
        std::from_chars(v.literal.data(), v.literal.data() + v.literal.size(), v.number);
    if (ec == std::errc::result_out_of_range) {
      // Python's float() gives +-inf for a huge literal and 0 for a tiny one.
      v.number = v.literal.find_first_of("eE") != std::string_view::npos &&
                         v.literal[v.literal.find_first_of("eE") + 1] == '-'
                     ? 0.0
                     : (v.literal[0] == '-' ? -HUGE_VAL : HUGE_VAL);
    } else if (ec != std::errc()) {
      fail("bad number");
    }
    (void)end;
    return v;
  }

  unsigned hex4() {
    if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      char h = s_[pos_++];
      code <<= 4;
      if (h >= '0' && h <= '9')
        code |= unsigned(h - '0');
      else if (h >= 'a' && h <= 'f')
        code |= unsigned(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F')
        code |= unsigned(h - 'A' + 10);
      else
        fail("bad \\u escape");
    }
    return code;
  }

  static void utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out += char(code);
    } else if (code < 0x800) {
      out += char(0xC0 | (code >> 6));
      out += char(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += char(0xE0 | (code >> 12));
      out += char(0x80 | ((code >> 6) & 0x3F));
      out += char(0x80 | (code & 0x3F));
    } else {
      out += char(0xF0 | (code >> 18));
      out += char(0x80 | ((code >> 12) & 0x3F));
      out += char(0x80 | ((code >> 6) & 0x3F));
      out += char(0x80 | (code & 0x3F));
    }
  }

  // One well-formed UTF-8 character (RFC 3629: no overlong forms, no surrogates, at most
  // U+10FFFF), copied: the answers echo strings, and they must stay valid UTF-8.
  void utf8_sequence(std::string& out) {
    auto byte = [&](size_t k) { return static_cast<unsigned char>(s_[pos_ + k]); };
    unsigned char lead = byte(0);
    size_t length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 0;
    bool ok = length > 0 && lead >= 0xC2 && lead <= 0xF4 && pos_ + length <= s_.size();
    for (size_t k = 1; ok && k < length; ++k) ok = (byte(k) & 0xC0) == 0x80;
    if (ok && length == 3) {
      ok = !(lead == 0xE0 && byte(1) < 0xA0) && !(lead == 0xED && byte(1) >= 0xA0);
    }
    if (ok && length == 4) {
      ok = !(lead == 0xF0 && byte(1) < 0x90) && !(lead == 0xF4 && byte(1) >= 0x90);
    }
    if (!ok) fail("invalid UTF-8 in a string");
    out.append(s_.substr(pos_, length));
    pos_ += length;
  }

  std::string parse_string() {
    ++pos_;  // the opening quote
    std::string out;
    for (;;) {
      if (pos_ >= s_.size()) fail("unterminated string");
      char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in a string");
      if (static_cast<unsigned char>(c) >= 0x80) {
        --pos_;
        utf8_sequence(out);
        continue;
      }
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated string");
      char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned code = hex4();
          if (code >= 0xD800 && code < 0xDC00 && s_.substr(pos_, 2) == "\\u") {
            size_t mark = pos_;
            pos_ += 2;
            unsigned low = hex4();
            if (low >= 0xDC00 && low < 0xE000) {
              code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
            } else {
              pos_ = mark;  // a lone high surrogate, kept as Python keeps it
            }
          }
          utf8(out, code);
          break;
        }
        default: fail(std::string("bad escape '\\") + e + "'");
      }
    }
  }
};

}  // namespace detail

inline Value parse(std::string_view text) {
  return detail::Parser(text).parse_document();
}

// --- writing -------------------------------------------------------------------------------------

inline void write_string(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;  // UTF-8 passes through
        }
    }
  }
  out += '"';
}

// The shortest decimal that reads back as the same double (Python's repr), NaN/Infinity as
// Python's json.dumps writes them.
inline void write_number(std::string& out, double x) {
  if (std::isnan(x)) {
    out += "NaN";
    return;
  }
  if (std::isinf(x)) {
    out += x > 0 ? "Infinity" : "-Infinity";
    return;
  }
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, x);
  std::string_view digits(buf, size_t(end - buf));
  out += digits;
  // Python writes a float with a fraction or an exponent ("1.0", not "1").
  if (digits.find_first_of(".eE") == std::string_view::npos) out += ".0";
}

inline void write_int(std::string& out, int64_t x) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, x);
  out.append(buf, size_t(end - buf));
}

// A parsed value written back (numbers exactly as they were written).
inline void write(std::string& out, const Value& v) {
  switch (v.type) {
    case Type::Null: out += "null"; break;
    case Type::Bool: out += v.boolean ? "true" : "false"; break;
    case Type::Number: out += v.literal; break;
    case Type::String: write_string(out, v.text); break;
    case Type::Array: {
      out += '[';
      for (size_t i = 0; i < v.items.size(); ++i) {
        if (i) out += ", ";
        write(out, v.items[i]);
      }
      out += ']';
      break;
    }
    case Type::Object: {
      out += '{';
      for (size_t i = 0; i < v.members.size(); ++i) {
        if (i) out += ", ";
        write_string(out, v.members[i].first);
        out += ": ";
        write(out, v.members[i].second);
      }
      out += '}';
      break;
    }
  }
}

inline std::string dump(const Value& v) {
  std::string out;
  write(out, v);
  return out;
}

}  // namespace json
