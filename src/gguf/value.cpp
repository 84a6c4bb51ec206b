// value.cpp: GGUF metadata values — constructors, type names and the integer view shared by the reader's
// typed getters and the writer's validation. Kept apart from reader/writer because both depend on it.
#include <limits>

#include "gguf/gguf.h"
#include "util/error.h"

namespace moe::gguf {

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::UINT8: return "UINT8";
    case ValueType::INT8: return "INT8";
    case ValueType::UINT16: return "UINT16";
    case ValueType::INT16: return "INT16";
    case ValueType::UINT32: return "UINT32";
    case ValueType::INT32: return "INT32";
    case ValueType::FLOAT32: return "FLOAT32";
    case ValueType::BOOL: return "BOOL";
    case ValueType::STRING: return "STRING";
    case ValueType::ARRAY: return "ARRAY";
    case ValueType::UINT64: return "UINT64";
    case ValueType::INT64: return "INT64";
    case ValueType::FLOAT64: return "FLOAT64";
  }
  return "unknown value type";
}

bool is_known_value_type(uint32_t id) { return id <= static_cast<uint32_t>(ValueType::FLOAT64); }

bool is_integer_type(ValueType t) {
  switch (t) {
    case ValueType::UINT8: case ValueType::INT8: case ValueType::UINT16: case ValueType::INT16:
    case ValueType::UINT32: case ValueType::INT32: case ValueType::UINT64: case ValueType::INT64:
      return true;
    default:
      return false;
  }
}

bool is_signed_integer_type(ValueType t) {
  return t == ValueType::INT8 || t == ValueType::INT16 || t == ValueType::INT32 || t == ValueType::INT64;
}

uint64_t value_type_min_bytes(ValueType t) {
  switch (t) {
    case ValueType::UINT8: case ValueType::INT8: case ValueType::BOOL: return 1;
    case ValueType::UINT16: case ValueType::INT16: return 2;
    case ValueType::UINT32: case ValueType::INT32: case ValueType::FLOAT32: return 4;
    case ValueType::UINT64: case ValueType::INT64: case ValueType::FLOAT64: return 8;
    case ValueType::STRING: return 8;      // u64 length, possibly zero bytes after it
    case ValueType::ARRAY: return 4 + 8;   // element type + count, possibly no elements
  }
  return 1;
}

namespace {
Value scalar(ValueType t) {
  Value v;
  v.type = t;
  return v;
}
Value unsigned_value(ValueType t, uint64_t x) {
  Value v = scalar(t);
  v.u = x;
  return v;
}
Value signed_value(ValueType t, int64_t x) {
  Value v = scalar(t);
  v.i = x;
  return v;
}
}  // namespace

Value Value::uint8(uint8_t v) { return unsigned_value(ValueType::UINT8, v); }
Value Value::uint16(uint16_t v) { return unsigned_value(ValueType::UINT16, v); }
Value Value::uint32(uint32_t v) { return unsigned_value(ValueType::UINT32, v); }
Value Value::uint64(uint64_t v) { return unsigned_value(ValueType::UINT64, v); }
Value Value::int8(int8_t v) { return signed_value(ValueType::INT8, v); }
Value Value::int16(int16_t v) { return signed_value(ValueType::INT16, v); }
Value Value::int32(int32_t v) { return signed_value(ValueType::INT32, v); }
Value Value::int64(int64_t v) { return signed_value(ValueType::INT64, v); }

Value Value::float32(float v) {
  Value r = scalar(ValueType::FLOAT32);
  r.f = v;
  return r;
}
Value Value::float64(double v) {
  Value r = scalar(ValueType::FLOAT64);
  r.f = v;
  return r;
}
Value Value::boolean(bool v) {
  Value r = scalar(ValueType::BOOL);
  r.b = v;
  return r;
}
Value Value::string(std::string v) {
  Value r = scalar(ValueType::STRING);
  r.s = std::move(v);
  return r;
}

Value Value::array_of(ValueType element_type, std::vector<Value> elements) {
  for (size_t k = 0; k < elements.size(); ++k)
    if (elements[k].type != element_type)
      fail("array element ", k, " has type ", value_type_name(elements[k].type), ", expected ",
           value_type_name(element_type));
  Value r = scalar(ValueType::ARRAY);
  r.array_type = element_type;
  r.array = std::move(elements);
  return r;
}

Value Value::string_array(const std::vector<std::string>& v) {
  std::vector<Value> e;
  e.reserve(v.size());
  for (const auto& s : v) e.push_back(string(s));
  return array_of(ValueType::STRING, std::move(e));
}
Value Value::float32_array(const std::vector<float>& v) {
  std::vector<Value> e;
  e.reserve(v.size());
  for (float x : v) e.push_back(float32(x));
  return array_of(ValueType::FLOAT32, std::move(e));
}
Value Value::int32_array(const std::vector<int32_t>& v) {
  std::vector<Value> e;
  e.reserve(v.size());
  for (int32_t x : v) e.push_back(int32(x));
  return array_of(ValueType::INT32, std::move(e));
}

bool Value::is_integer() const { return is_integer_type(type); }
bool Value::is_float() const { return type == ValueType::FLOAT32 || type == ValueType::FLOAT64; }

std::optional<int64_t> Value::as_int() const {
  if (!is_integer()) return std::nullopt;
  if (is_signed_integer_type(type)) return i;
  if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
  return static_cast<int64_t>(u);
}

}  // namespace moe::gguf
