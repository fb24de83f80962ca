#include "agent/config/config.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status.h"
#include "yaml-cpp/depthguard.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace smad::agent {
namespace {

using Json = nlohmann::json;

constexpr size_t kMaxConfigSize = size_t{1} << 20;
// Deeper input is refused before yaml-cpp, which recurses once per level, sees it.
constexpr int kMaxNesting = 64;
// Bounds the JSON made from `params` mappings: aliases can make a small document expand exponentially.
constexpr size_t kMaxJsonNodes = 100000;
constexpr double kMaxSeconds = 1e9;

constexpr char kTagStr[] = "tag:yaml.org,2002:str";

absl::Status Error(absl::string_view path, absl::string_view problem) {
  return absl::InvalidArgumentError(path.empty() ? std::string(problem) : absl::StrCat(path, ": ", problem));
}

// `text` with control and non-ASCII bytes escaped (\n, \xff), so messages are one printable line.
std::string Printable(absl::string_view text) {
  std::string out;
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    out += byte < 0x20 || byte >= 0x7f ? absl::CHexEscape(absl::string_view(&c, 1)) : std::string(1, c);
  }
  return out;
}

std::string Quote(absl::string_view text) {
  constexpr size_t kMaxShown = 60;
  std::string shown = absl::CHexEscape(text.substr(0, kMaxShown));
  return absl::StrCat("\"", shown, text.size() > kMaxShown ? "...\"" : "\"");
}

// How a node is shown after "got": its quoted text for scalars, its kind otherwise.
std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar: return Quote(node.Scalar());
    case YAML::NodeType::Sequence: return "a sequence";
    case YAML::NodeType::Map: return "a mapping";
    default: return "null";
  }
}

absl::Status Expected(absl::string_view path, absl::string_view what, const YAML::Node& got) {
  return Error(path, absl::StrCat("expected ", what, ", got ", Describe(got)));
}

std::string Child(absl::string_view path, absl::string_view key) {
  return path.empty() ? Printable(key) : absl::StrCat(path, ".", Printable(key));
}
std::string Element(absl::string_view path, size_t index) { return absl::StrCat(path, "[", index, "]"); }

// YAML 1.2 core schema integers: [-+]?[0-9]+, 0o[0-7]+, 0x[0-9a-fA-F]+. nullopt: not an integer; a JSON
// string: an integer out of the 64-bit range (kept as text rather than rounded).
std::optional<Json> ParseCoreInt(absl::string_view text) {
  absl::string_view digits = text;
  int base = 10;
  bool negative = false;
  if (absl::ConsumePrefix(&digits, "0o")) {
    base = 8;
  } else if (absl::ConsumePrefix(&digits, "0x")) {
    base = 16;
  } else if (!digits.empty() && (digits[0] == '-' || digits[0] == '+')) {
    negative = digits[0] == '-';
    digits.remove_prefix(1);
  }
  if (digits.empty()) return std::nullopt;
  uint64_t value = 0;
  const char* end = digits.data() + digits.size();
  auto [stop, error] = std::from_chars(digits.data(), end, value, base);
  if (stop != end) return std::nullopt;
  if (error == std::errc::result_out_of_range) return Json(std::string(text));
  constexpr uint64_t kMaxPositive = std::numeric_limits<int64_t>::max();
  if (!negative) return value <= kMaxPositive ? Json(static_cast<int64_t>(value)) : Json(value);
  if (value <= kMaxPositive) return Json(-static_cast<int64_t>(value));
  if (value == kMaxPositive + 1) return Json(std::numeric_limits<int64_t>::min());
  return Json(std::string(text));
}

// YAML 1.2 core schema floats, [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?, when finite (JSON has
// no infinities, so ".inf", ".nan" and overflowing values are not numbers here).
std::optional<double> ParseCoreFloat(absl::string_view text) {
  auto digits = [&text]() {
    size_t n = 0;
    while (n < text.size() && absl::ascii_isdigit(static_cast<unsigned char>(text[n]))) ++n;
    text.remove_prefix(n);
    return n;
  };
  const absl::string_view whole = text;
  if (!text.empty() && (text[0] == '-' || text[0] == '+')) text.remove_prefix(1);
  size_t mantissa = digits();
  if (absl::ConsumePrefix(&text, ".")) mantissa += digits();
  if (mantissa == 0) return std::nullopt;
  if (!text.empty() && (text[0] == 'e' || text[0] == 'E')) {
    text.remove_prefix(1);
    if (!text.empty() && (text[0] == '-' || text[0] == '+')) text.remove_prefix(1);
    if (digits() == 0) return std::nullopt;
  }
  double value = 0;
  if (!text.empty() || !absl::SimpleAtod(whole, &value) || !std::isfinite(value)) return std::nullopt;
  return value;
}

// A scalar as JSON: quoted or !!str-tagged scalars are strings; others are resolved by the core schema
// (null is resolved by yaml-cpp already).
Json ScalarToJson(const YAML::Node& node) {
  const std::string& text = node.Scalar();
  if (node.Tag() == "!" || node.Tag() == kTagStr) return text;
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  if (std::optional<Json> integer = ParseCoreInt(text)) return *std::move(integer);
  if (std::optional<double> real = ParseCoreFloat(text)) return *real;
  return text;
}

// nlohmann::json throws when serialising invalid UTF-8, so params strings are checked up front.
bool IsUtf8(const std::string& text) {
  try {
    (void)Json(text).dump();
    return true;
  } catch (const Json::exception&) {
    return false;
  }
}

// Parses one value at `path`; each parser below has this shape.
template <typename T>
using Parser = std::function<absl::StatusOr<T>(const YAML::Node&, const std::string& path)>;

absl::StatusOr<std::string> String(const YAML::Node& node, const std::string& path) {
  if (!node.IsScalar()) return Expected(path, "a string", node);
  return node.Scalar();
}

absl::StatusOr<std::string> NonEmptyString(const YAML::Node& node, const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, String(node, path));
  if (text.empty()) return Error(path, "empty");
  return text;
}

Parser<std::string> OneOf(std::vector<std::string> choices) {
  return [choices = std::move(choices)](const YAML::Node& node, const std::string& path) -> absl::StatusOr<std::string> {
    if (node.IsScalar()) {
      for (const std::string& choice : choices) {
        if (node.Scalar() == choice) return choice;
      }
    }
    return Expected(path, absl::StrCat("one of ", absl::StrJoin(choices, ", ")), node);
  };
}

absl::StatusOr<uint16_t> Port(const YAML::Node& node, const std::string& path) {
  std::optional<Json> value = node.IsScalar() ? ParseCoreInt(node.Scalar()) : std::nullopt;
  if (!value || !value->is_number_integer() || value->get<int64_t>() < 0 || value->get<int64_t>() > 65535) {
    return Expected(path, "an integer in 0..65535", node);
  }
  return static_cast<uint16_t>(value->get<int64_t>());
}

// A positive number of seconds (fractions allowed), in milliseconds.
absl::StatusOr<std::chrono::milliseconds> Seconds(const YAML::Node& node, const std::string& path) {
  std::optional<double> seconds = node.IsScalar() ? ParseCoreFloat(node.Scalar()) : std::nullopt;
  if (!seconds || *seconds <= 0) return Expected(path, "a number of seconds > 0", node);
  if (*seconds > kMaxSeconds) return Expected(path, absl::StrCat("at most ", kMaxSeconds, " seconds"), node);
  const auto millis = static_cast<int64_t>(std::llround(*seconds * 1000));
  if (millis < 1) return Expected(path, "at least 0.001 seconds", node);
  return std::chrono::milliseconds(millis);
}

// A sequence of `T`; null is the empty list.
template <typename T>
Parser<std::vector<T>> ListOf(Parser<T> element) {
  return [element](const YAML::Node& node, const std::string& path) -> absl::StatusOr<std::vector<T>> {
    std::vector<T> items;
    if (node.IsNull()) return items;
    if (!node.IsSequence()) return Expected(path, "a sequence", node);
    for (size_t i = 0; i < node.size(); ++i) {
      ASSIGN_OR_RETURN(T item, element(node[i], Element(path, i)));
      items.push_back(std::move(item));
    }
    return items;
  };
}

// Converts a `params` value to JSON; `budget` counts the nodes still allowed.
absl::StatusOr<Json> ToJson(const YAML::Node& node, const std::string& path, int depth, size_t& budget) {
  if (depth > kMaxNesting) return Error(path, absl::StrCat("nested more than ", kMaxNesting, " levels deep"));
  if (budget == 0) return Error(path, absl::StrCat("more than ", kMaxJsonNodes, " values (aliases expanded)"));
  --budget;
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      if (!IsUtf8(node.Scalar())) return Error(path, "not valid UTF-8");
      return ScalarToJson(node);
    case YAML::NodeType::Sequence: {
      Json array = Json::array();
      for (size_t i = 0; i < node.size(); ++i) {
        ASSIGN_OR_RETURN(Json item, ToJson(node[i], Element(path, i), depth + 1, budget));
        array.push_back(std::move(item));
      }
      return array;
    }
    case YAML::NodeType::Map: {
      Json object = Json::object();
      for (const auto& entry : node) {
        if (!entry.first.IsScalar()) return Expected(path, "string keys", entry.first);
        const std::string& key = entry.first.Scalar();
        if (!IsUtf8(key)) return Error(path, "a key is not valid UTF-8");
        if (object.contains(key)) return Error(path, absl::StrCat("duplicate key ", Quote(key)));
        ASSIGN_OR_RETURN(Json value, ToJson(entry.second, Child(path, key), depth + 1, budget));
        object[key] = std::move(value);
      }
      return object;
    }
    default:
      return Json();
  }
}

// A `params` mapping as a JSON object; null stays null.
Parser<Json> Params(size_t& budget) {
  return [&budget](const YAML::Node& node, const std::string& path) -> absl::StatusOr<Json> {
    if (node.IsNull()) return Json();
    if (!node.IsMap()) return Expected(path, "a mapping", node);
    return ToJson(node, path, 0, budget);
  };
}

// One key of a mapping and how to parse its value.
struct Field {
  const char* name;
  std::function<absl::Status(const YAML::Node&, const std::string& path)> parse;
  bool required = false;
};

// A Field::parse storing what `parser` (one of the parsers above) returns into `out`.
template <typename T, typename ParserT>
std::function<absl::Status(const YAML::Node&, const std::string&)> Into(T& out, ParserT parser) {
  return [&out, parser](const YAML::Node& node, const std::string& path) -> absl::Status {
    ASSIGN_OR_RETURN(out, parser(node, path));
    return absl::OkStatus();
  };
}

// Parses the mapping `node` (null: an empty one) at `path`: each key must be one of `fields`, at most once.
absl::Status ParseMapping(const YAML::Node& node, const std::string& path, const std::vector<Field>& fields) {
  if (!node.IsNull() && !node.IsMap()) return Expected(path, "a mapping", node);
  std::set<std::string> seen;
  for (const auto& entry : node) {
    if (!entry.first.IsScalar()) return Expected(path, "string keys", entry.first);
    const std::string& key = entry.first.Scalar();
    auto field = std::find_if(fields.begin(), fields.end(), [&](const Field& f) { return key == f.name; });
    if (field == fields.end()) return Error(path, absl::StrCat("unknown key ", Quote(key)));
    if (!seen.insert(key).second) return Error(path, absl::StrCat("duplicate key ", Quote(key)));
    RETURN_IF_ERROR(field->parse(entry.second, Child(path, key)));
  }
  for (const Field& field : fields) {
    if (field.required && !seen.contains(field.name)) return Error(Child(path, field.name), "missing");
  }
  return absl::OkStatus();
}

absl::Status ParseDevices(const YAML::Node& node, const std::string& path, std::vector<DeviceConfig>& devices,
                          size_t& budget) {
  if (node.IsNull()) return absl::OkStatus();
  if (!node.IsSequence()) return Expected(path, "a sequence", node);
  std::set<std::string> names;
  for (size_t i = 0; i < node.size(); ++i) {
    DeviceConfig device;
    const std::string entry_path = Element(path, i);
    if (!node[i].IsMap()) return Expected(entry_path, "a mapping", node[i]);
    RETURN_IF_ERROR(ParseMapping(node[i], entry_path,
                                 {{"name", Into(device.name, NonEmptyString), /*required=*/true},
                                  {"params", Into(device.params, Params(budget))}}));
    if (!names.insert(device.name).second) {
      return Error(Child(entry_path, "name"), absl::StrCat("duplicate ", Quote(device.name)));
    }
    devices.push_back(std::move(device));
  }
  return absl::OkStatus();
}

absl::StatusOr<AgentConfig> ParseRoot(const YAML::Node& root) {
  AgentConfig config;
  size_t budget = kMaxJsonNodes;
  std::optional<std::string> top_socket, target_socket;
  auto crypto = [&](const YAML::Node& node, const std::string& path) -> absl::Status {
    if (node.IsNull()) return absl::OkStatus();
    RETURN_IF_ERROR(ParseMapping(node, path,
                                 {{"name", Into(config.crypto.name, NonEmptyString), true},
                                  {"params", Into(config.crypto.params, Params(budget))}}));
    if (config.crypto.params.is_null()) config.crypto.params = Json::object();
    return absl::OkStatus();
  };
  TargetConfig& target = config.target;
  auto target_fields = [&](const YAML::Node& node, const std::string& path) {
    return ParseMapping(node, path,
                        {{"socket", Into(target_socket, String)},
                         {"binary", Into(target.binary, String)},
                         {"cpumask", Into(target.cpumask, String)},
                         {"config_file", Into(target.config_file, String)},
                         {"args", Into(target.args, ListOf<std::string>(String))},
                         {"rpc_timeout", Into(target.rpc_timeout, Seconds)},
                         {"startup_timeout", Into(target.startup_timeout, Seconds)},
                         {"health_interval", Into(target.health_interval, Seconds)}});
  };
  auto devices = [&](const YAML::Node& node, const std::string& path) {
    return ParseDevices(node, path, config.devices, budget);
  };
  auto state_sync = [&](const YAML::Node& node, const std::string& path) -> absl::Status {
    ASSIGN_OR_RETURN(std::string mode, OneOf({"full", "normal"})(node, path));
    config.state_fsync = mode == "full";
    return absl::OkStatus();
  };
  if (!root.IsNull() && !root.IsMap()) return Expected("", "a mapping of settings", root);
  RETURN_IF_ERROR(ParseMapping(
      root, "",
      {{"address", Into(config.address, NonEmptyString)},
       {"port", Into(config.port, Port)},
       {"socket", Into(top_socket, String)},
       {"devices", devices},
       {"plugins", Into(config.plugins, ListOf<std::string>(NonEmptyString))},
       {"crypto", crypto},
       {"discovery_timeout", Into(config.discovery_timeout, Seconds)},
       {"volume_cleanup_period", Into(config.volume_cleanup_period, Seconds)},
       {"state_dir", Into(config.state_dir, NonEmptyString)},
       {"state_sync", state_sync},
       {"log_level", Into(config.log_level, OneOf({"trace", "debug", "info", "warn", "error"}))},
       {"target", target_fields}}));
  if (top_socket && target_socket) return Error("target.socket", "conflicts with the top-level socket (give one)");
  if (top_socket) target.socket = *top_socket;
  if (target_socket) target.socket = *target_socket;
  return config;
}

// A cheap, conservative estimate of how deeply `text` nests, to refuse pathological input before yaml-cpp
// recurses into it: flow brackets are counted everywhere (also in quotes and comments), and each line adds
// its indentation and its leading block indicators ("- ", "? ", ": "). Not exact: yaml-cpp's own limit
// (DeepRecursion at 2000 levels) and the depth limit of ToJson are the backstops.
absl::Status CheckNesting(absl::string_view text) {
  int flow = 0;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    size_t pos = line.find_first_not_of(' ');
    if (pos == absl::string_view::npos) continue;
    int block = static_cast<int>(pos);
    while (pos < line.size() && (line[pos] == '-' || line[pos] == '?' || line[pos] == ':') &&
           (pos + 1 == line.size() || line[pos + 1] == ' ')) {
      ++block;
      pos = line.find_first_not_of(' ', pos + 1);
      if (pos == absl::string_view::npos) break;
    }
    int deepest = flow;
    for (char c : line) {
      if (c == '[' || c == '{') deepest = std::max(deepest, ++flow);
      if ((c == ']' || c == '}') && flow > 0) --flow;
    }
    if (block + deepest > kMaxNesting) {
      return Error(absl::StrCat("line ", line_number), absl::StrCat("nested more than ", kMaxNesting, " levels deep"));
    }
  }
  return absl::OkStatus();
}

class IgnoreEvents : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// True when `text` holds more than one document. (Not YAML::LoadAll: on some malformed input it keeps
// producing empty documents forever; each HandleNextDocument call does terminate.) Throws YAML::Exception.
bool HasSecondDocument(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  IgnoreEvents events;
  return parser.HandleNextDocument(events) && parser.HandleNextDocument(events);
}

absl::Status YamlError(const YAML::Exception& e) {
  // yaml-cpp's messages may quote the offending character, which can be a newline or any other byte.
  const std::string message =
      Printable(dynamic_cast<const YAML::DeepRecursion*>(&e) ? std::string("nested too deeply") : e.msg);
  if (e.mark.is_null()) return Error("", message);
  return Error(absl::StrCat("line ", e.mark.line + 1, ", column ", e.mark.column + 1), message);
}

}  // namespace

absl::StatusOr<AgentConfig> ParseConfig(absl::string_view yaml_text) {
  if (yaml_text.size() > kMaxConfigSize) return Error("", absl::StrCat("larger than ", kMaxConfigSize, " bytes"));
  RETURN_IF_ERROR(CheckNesting(yaml_text));
  try {
    const std::string text(yaml_text);
    if (HasSecondDocument(text)) return Error("", "expected a single YAML document");
    return ParseRoot(YAML::Load(text));
  } catch (const YAML::Exception& e) {
    return YamlError(e);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("cannot parse the configuration: ", Printable(e.what())));
  } catch (...) {
    return absl::InvalidArgumentError("cannot parse the configuration");
  }
}

absl::StatusOr<AgentConfig> LoadConfigFile(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), std::fclose);
  std::string text;
  if (file != nullptr) {
    char buffer[65536];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof(buffer), file.get())) > 0 && text.size() <= kMaxConfigSize) {
      text.append(buffer, n);
    }
  }
  if (file == nullptr || std::ferror(file.get())) {
    const int err = errno;
    return ErrnoStatus(err, absl::StrCat("cannot read the configuration file ", path, ": ", ErrnoString(err)));
  }
  absl::StatusOr<AgentConfig> config = ParseConfig(text);
  if (!config.ok()) return absl::Status(config.status().code(), absl::StrCat(path, ": ", config.status().message()));
  return config;
}

void AppendEnvPlugins(AgentConfig& config, const char* env_value) {
  if (env_value == nullptr) return;
  for (absl::string_view item : absl::StrSplit(env_value, ':', absl::SkipEmpty())) {
    config.plugins.emplace_back(item);
  }
}

}  // namespace smad::agent
