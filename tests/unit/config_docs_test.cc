// Holds ephemera-config(5) and the packaged config.yaml to the parser: every
// key ConfigKeys() lists is documented, no other is, and the defaults both
// give are the ones Config{} has.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/event_types.h"
#include "core/fs.h"

namespace ephemera {
namespace {

const std::filesystem::path kSourceDir = EPHEMERA_SOURCE_DIR;

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

void ReplaceAll(std::string& text, std::string_view from, std::string_view to) {
  for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
}

// The roff escapes the man page uses in keys and values, as plain text.
std::string Unroff(std::string text) {
  ReplaceAll(text, "\\-", "-");
  ReplaceAll(text, "\\&", "");
  ReplaceAll(text, "\\(dq", "\"");
  ReplaceAll(text, "\\e", "\\");
  return text;
}

bool IsScalarKey(const std::string& key) {
  return key.find('[') == std::string::npos && key.find('<') == std::string::npos;
}

// The lines of a man page's section, from its .SH to the next.
std::vector<std::string> ManSection(const std::vector<std::string>& lines,
                                    const std::string& heading) {
  auto start = std::find(lines.begin(), lines.end(), ".SH " + heading);
  if (start == lines.end()) return {};
  auto end = std::find_if(start + 1, lines.end(),
                          [](const std::string& l) { return l.starts_with(".SH "); });
  return {start + 1, end};
}

// One key of ephemera-config(5): ".TP", ".B KEY", then text holding one
// "Default: ..." line, the value in bold when there is one.
struct ManKey {
  std::string key;
  int default_lines = 0;
  std::optional<std::string> default_value;
};

std::vector<ManKey> ReadManKeys() {
  const auto lines = ManSection(Lines(ReadFile(kSourceDir / "man/ephemera-config.5")), "KEYS");
  EXPECT_FALSE(lines.empty()) << "no .SH KEYS in man/ephemera-config.5";
  std::vector<ManKey> keys;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (lines[i] != ".TP") continue;
    if (i + 1 >= lines.size() || !lines[i + 1].starts_with(".B ")) {
      ADD_FAILURE() << "a .TP under KEYS not followed by '.B KEY': line " << i + 1 << " of KEYS";
      continue;
    }
    ManKey key{Unroff(lines[i + 1].substr(3))};
    for (std::size_t j = i + 2; j < lines.size(); ++j) {
      const std::string& line = lines[j];
      if (line == ".TP" || line.starts_with(".SS")) break;
      if (!line.starts_with("Default:")) continue;
      ++key.default_lines;
      auto bold = line.find("\\fB");
      if (bold == std::string::npos) continue;
      auto roman = line.find("\\fR", bold);
      if (roman == std::string::npos) {
        ADD_FAILURE() << key.key << ": a \\fB default without \\fR";
        continue;
      }
      key.default_value = Unroff(line.substr(bold + 3, roman - bold - 3));
    }
    keys.push_back(std::move(key));
  }
  return keys;
}

// Which parts of two configurations differ, for failure messages.
std::string Differences(const Config& a, const Config& b) {
  std::string out;
  auto check = [&](const char* name, bool same) {
    if (!same) out += std::string(out.empty() ? "" : ", ") + name;
  };
  check("top-level keys",
        a.state_dir == b.state_dir && a.image_dir == b.image_dir && a.socket == b.socket &&
            a.socket_mode == b.socket_mode && a.client_host == b.client_host &&
            a.destroy_on_exit == b.destroy_on_exit && a.endpoint_password == b.endpoint_password);
  check("limits", a.limits == b.limits);
  check("log", a.log == b.log);
  check("vm", a.vm == b.vm);
  check("network", a.network == b.network);
  check("defaults", a.defaults == b.defaults);
  check("remote", a.remote == b.remote);
  check("anweddol", a.anweddol == b.anweddol);
  check("registries", a.registries == b.registries);
  check("pool", a.pools == b.pools);
  check("images", a.images == b.images);
  check("pull", a.pull == b.pull);
  check("wirt", a.wirt == b.wirt);
  check("container", a.container == b.container);
  check("metrics", a.metrics == b.metrics);
  check("events", a.events == b.events);
  check("hooks", a.hooks == b.hooks);
  return out.empty() ? "nothing named (a part Differences does not list)" : out;
}

// A YAML document built from dotted keys: "pool[]" is a list of one entry,
// "<name>" a map entry named after the placeholder.
struct YamlTree {
  std::optional<std::string> value;
  bool list = false;
  std::map<std::string, std::unique_ptr<YamlTree>> children;

  void Set(const std::string& key, const std::string& text) { Node(key)->value = text; }

  // The node of `key`, made if need be.
  YamlTree* Node(const std::string& key) {
    YamlTree* node = this;
    std::istringstream parts(key);
    for (std::string part; std::getline(parts, part, '.');) {
      bool list = part.ends_with("[]");
      if (list) part.resize(part.size() - 2);
      if (part.starts_with("<") && part.ends_with(">")) part = part.substr(1, part.size() - 2);
      auto& child = node->children[part];
      if (!child) child = std::make_unique<YamlTree>();
      child->list = child->list || list;
      node = child.get();
    }
    return node;
  }

  std::string Text(int indent = 0) const {
    std::string out;
    const std::string pad(indent, ' ');
    for (const auto& [key, child] : children) {
      if (child->value) {
        out += pad + key + ": " + *child->value + "\n";
      } else if (child->list) {
        out += child->children.empty()
                   ? pad + key + ": [{}]\n"
                   : pad + key + ":\n" + pad + "  -\n" + child->Text(indent + 4);
      } else {
        out += pad + key + ":\n" + child->Text(indent + 2);
      }
    }
    return out;
  }
};

// The part of a key before its list or map entry ("pool[]", "images.<name>"),
// empty for a key outside any; a map of scalars (hooks.on.<event>) has none.
std::string EntryPrefix(const std::string& key) {
  auto list = key.find("[].");
  auto map = key.find(".<");
  if (list != std::string::npos) return key.substr(0, list + 2);
  if (map != std::string::npos) {
    auto close = key.find('>', map);
    if (close + 1 < key.size()) return key.substr(0, close + 1);
  }
  return "";
}

// What a list or map entry cannot leave out, for building one.
const std::map<std::string, std::string> kRequiredInEntries = {
    {"registries[].host", "registry.example"},
    {"images.<name>.rootfs", "docker://registry.example/rootfs"},
};

// A key as a pattern for the paths of a document: placeholders match any name.
std::regex KeyPattern(const std::string& key) {
  std::string pattern;
  for (std::size_t i = 0; i < key.size(); ++i) {
    if (key[i] == '<') {
      i = key.find('>', i);
      pattern += "[^.]+";
    } else if (std::isalnum(static_cast<unsigned char>(key[i])) || key[i] == '_') {
      pattern += key[i];
    } else {
      pattern += std::string("\\") + key[i];
    }
  }
  return std::regex(pattern);
}

// The paths of a YAML document's values, lists of mappings as KEY[].
void Paths(const YAML::Node& node, const std::string& path, std::set<std::string>& out) {
  if (node.IsMap()) {
    for (const auto& entry : node) {
      const std::string key = entry.first.as<std::string>();
      Paths(entry.second, path.empty() ? key : path + "." + key, out);
    }
  } else if (node.IsSequence() && node.size() > 0 && node[0].IsMap()) {
    for (const auto& item : node) Paths(item, path + "[]", out);
  } else if (!path.empty()) {
    out.insert(path);
  }
}

std::set<std::string> Paths(const std::string& yaml) {
  std::set<std::string> out;
  Paths(YAML::Load(yaml), "", out);
  return out;
}

// packaging/config.yaml's conventions: "#key: value" (at an indentation of
// two spaces a level) is a key at its default; "##..." is an example of a
// list or map; "# ..." is prose.
std::string Uncommented(const std::string& text, bool examples) {
  static const std::regex key_line(R"(^#((?:  )*[a-z_][a-z0-9_]*:(?: .*)?)$)");
  std::string out;
  for (const std::string& line : Lines(text)) {
    std::smatch m;
    if (std::regex_match(line, m, key_line)) {
      out += m[1].str();
    } else if (examples && line.starts_with("##")) {
      out += line.substr(2);
    } else {
      out += line;
    }
    out += "\n";
  }
  return out;
}

TEST(ConfigKeysTest, ListsTheParsersKeysOnceEachWithPlaceholdersForEntries) {
  const std::vector<std::string> keys = ConfigKeys();
  const std::set<std::string> unique(keys.begin(), keys.end());
  EXPECT_EQ(unique.size(), keys.size()) << "a key listed twice";
  for (const char* expected :
       {"state_dir", "socket_mode", "limits.max_sandboxes", "vm.accel", "network.forward_ports",
        "wirt.log_max_kib", "pool[].image", "registries[].host", "images.<name>.rootfs",
        "hooks.on.<event>", "hooks.before_create", "metrics.listen", "events.max_subscribers"}) {
    EXPECT_TRUE(unique.count(expected)) << expected;
  }
  for (const std::string& key : keys) {
    EXPECT_TRUE(
        std::regex_match(key, std::regex(R"([a-z_]+(\[\])?(\.([a-z_]+|<[a-z]+>)(\[\])?)*)")))
        << key;
    // Sections are not keys of their own; sample names never leak in.
    EXPECT_NE(key, "limits");
    EXPECT_EQ(key.find("created"), std::string::npos) << key;
  }
  // Every key it names outside lists and maps is one the parser takes (a
  // key given no value keeps its default).
  YamlTree all;
  for (const std::string& key : keys) {
    if (IsScalarKey(key)) all.Set(key, "");
  }
  Config parsed;
  ASSERT_NO_THROW(parsed = ParseConfig(all.Text())) << all.Text();
  EXPECT_TRUE(parsed == Config{});
}

TEST(ConfigDocsTest, TheManPageDocumentsEveryKeyAndNoOther) {
  const std::vector<ManKey> documented = ReadManKeys();
  std::set<std::string> in_man;
  for (const ManKey& k : documented) {
    EXPECT_TRUE(in_man.insert(k.key).second) << k.key << " is documented twice";
    EXPECT_EQ(k.default_lines, 1) << k.key << ": one 'Default:' line expected";
  }
  const std::vector<std::string> keys = ConfigKeys();
  const std::set<std::string> accepted(keys.begin(), keys.end());
  for (const std::string& key : keys) {
    EXPECT_TRUE(in_man.count(key)) << key << " is not documented in man/ephemera-config.5";
  }
  for (const std::string& key : in_man) {
    EXPECT_TRUE(accepted.count(key)) << key << " is documented but the parser does not take it";
  }
}

TEST(ConfigDocsTest, TheManPagesDefaultsAreTheParsersDefaults) {
  YamlTree top;
  std::map<std::string, YamlTree> entries;  // entry prefix -> its keys
  std::size_t checked = 0;
  for (const ManKey& k : ReadManKeys()) {
    if (!k.default_value) continue;
    ++checked;
    const std::string prefix = EntryPrefix(k.key);
    if (prefix.empty()) {
      ASSERT_TRUE(IsScalarKey(k.key)) << k.key << " has a default but is a map's";
      top.Set(k.key, *k.default_value);
    } else {
      entries[prefix].Set(k.key, *k.default_value);
    }
  }
  EXPECT_GT(checked, ConfigKeys().size() / 2) << "the man page's defaults were not found";

  const std::string yaml = top.Text();
  Config parsed;
  ASSERT_NO_THROW(parsed = ParseConfig(yaml)) << yaml;
  EXPECT_TRUE(parsed == Config{}) << "the man page's defaults differ in "
                                  << Differences(parsed, Config{}) << ":\n"
                                  << yaml;

  // A wrong default is noticed.
  top.Set("limits.max_sandboxes", "17");
  EXPECT_FALSE(ParseConfig(top.Text()) == Config{});

  // An entry of each list and map: its documented defaults are what an
  // entry that leaves them out gets.
  for (auto& [prefix, defaults] : entries) {
    YamlTree bare;
    for (const auto& [key, value] : kRequiredInEntries) {
      if (key.starts_with(prefix + ".")) {
        bare.Set(key, value);
        defaults.Set(key, value);
      }
    }
    bare.Node(prefix);  // the entry, even with nothing in it
    Config from_defaults, from_bare;
    ASSERT_NO_THROW(from_defaults = ParseConfig(defaults.Text())) << defaults.Text();
    ASSERT_NO_THROW(from_bare = ParseConfig(bare.Text())) << bare.Text();
    EXPECT_TRUE(from_defaults == from_bare) << prefix << ": the man page's defaults differ in "
                                            << Differences(from_defaults, from_bare) << ":\n"
                                            << defaults.Text();
    EXPECT_FALSE(from_bare == Config{}) << prefix << ": no entry was built";
  }
  EXPECT_EQ(entries.size(), 3u) << "pool[], registries[] and images.<name> have defaults";
}

TEST(ConfigDocsTest, TheManPageNamesEveryEventType) {
  const auto lines =
      ManSection(Lines(ReadFile(kSourceDir / "man/ephemera-config.5")), "EVENT TYPES");
  std::set<std::string> named;
  for (const std::string& line : lines) {
    if (!line.starts_with(".B ") && !line.starts_with(".BR ")) continue;
    std::istringstream words(line.substr(line.find(' ') + 1));
    for (std::string word; words >> word;) {
      word.erase(
          std::remove_if(word.begin(), word.end(), [](char c) { return c == '"' || c == ','; }),
          word.end());
      named.insert(word);
    }
  }
  for (std::string_view type : event_type::kAll) {
    EXPECT_TRUE(named.count(std::string(type))) << type << " is not under EVENT TYPES";
  }
}

TEST(PackagedConfigTest, IsAllCommentedOutAndParsesToTheDefaults) {
  const std::string text = ReadFile(kSourceDir / "packaging/config.yaml");
  int line_number = 0;
  for (const std::string& line : Lines(text)) {
    ++line_number;
    EXPECT_TRUE(line.empty() || line.starts_with("#")) << "line " << line_number << ": " << line;
  }
  Config parsed;
  ASSERT_NO_THROW(parsed = ParseConfig(text));
  EXPECT_TRUE(parsed == Config{});
}

TEST(PackagedConfigTest, ItsKeysUncommentedAreTheParsersDefaults) {
  const std::string yaml = Uncommented(ReadFile(kSourceDir / "packaging/config.yaml"), false);
  Config parsed;
  ASSERT_NO_THROW(parsed = ParseConfig(yaml)) << yaml;
  EXPECT_TRUE(parsed == Config{}) << "packaging/config.yaml's defaults differ in "
                                  << Differences(parsed, Config{});

  // Each key outside lists and maps is there at its default.
  const std::set<std::string> shown = Paths(yaml);
  for (const std::string& key : ConfigKeys()) {
    if (IsScalarKey(key)) {
      EXPECT_TRUE(shown.count(key)) << key << " has no '#key:' line";
    }
  }
}

TEST(PackagedConfigTest, ItsExamplesAreValidAndMentionEveryListAndMapKey) {
  const std::string yaml = Uncommented(ReadFile(kSourceDir / "packaging/config.yaml"), true);
  Config parsed;
  ASSERT_NO_THROW(parsed = ParseConfig(yaml)) << yaml;
  EXPECT_FALSE(parsed.pools.empty());
  EXPECT_FALSE(parsed.registries.empty());
  EXPECT_FALSE(parsed.images.empty());
  EXPECT_FALSE(parsed.hooks.on.empty());

  const std::set<std::string> paths = Paths(yaml);
  for (const std::string& key : ConfigKeys()) {
    const std::regex pattern = KeyPattern(key);
    EXPECT_TRUE(std::any_of(paths.begin(), paths.end(),
                            [&](const std::string& p) { return std::regex_match(p, pattern); }))
        << key << " is not in packaging/config.yaml";
  }
}

}  // namespace
}  // namespace ephemera
