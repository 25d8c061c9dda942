// docs/openapi.yaml and the router's routes describe the same API: a route
// missing from the description, or described but not served, fails here.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <functional>
#include <set>
#include <string>

#include "api/router.h"

namespace ephemera {
namespace {

using ::testing::IsEmpty;

const std::set<std::string> kHttpMethods = {"get",   "put",  "post",    "delete",
                                            "patch", "head", "options", "trace"};

std::string Upper(std::string text) {
  for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}

class OpenApiTest : public ::testing::Test {
 protected:
  void SetUp() override { doc_ = YAML::LoadFile(EPHEMERA_OPENAPI); }
  YAML::Node doc_;
};

TEST_F(OpenApiTest, DescribesExactlyTheRoutesTheRouterServes) {
  std::set<std::string> described;
  for (const auto& path : doc_["paths"]) {
    for (const auto& item : path.second) {
      const std::string key = item.first.as<std::string>();
      if (kHttpMethods.count(key))
        described.insert(Upper(key) + " " + path.first.as<std::string>());
    }
  }
  std::set<std::string> served;
  for (const ApiRouteInfo& route : ApiRoutes()) served.insert(route.method + " " + route.path);
  ASSERT_FALSE(served.empty());

  std::set<std::string> undescribed, unserved;
  for (const auto& r : served) {
    if (!described.count(r)) undescribed.insert(r);
  }
  for (const auto& r : described) {
    if (!served.count(r)) unserved.insert(r);
  }
  EXPECT_THAT(undescribed, IsEmpty()) << "routes missing from docs/openapi.yaml";
  EXPECT_THAT(unserved, IsEmpty()) << "docs/openapi.yaml describes routes nobody serves";
}

TEST_F(OpenApiTest, IsOpenApi3WithAnswersForEveryOperationAndNoDanglingReferences) {
  EXPECT_TRUE(doc_["openapi"].as<std::string>().starts_with("3."));
  EXPECT_TRUE(doc_["info"]["title"].IsScalar());
  for (const auto& path : doc_["paths"]) {
    // /metrics is where Prometheus looks, outside the versioned API.
    const std::string name = path.first.as<std::string>();
    EXPECT_TRUE(name.starts_with("/v1/") || name == "/metrics") << name;
    for (const auto& item : path.second) {
      const std::string key = item.first.as<std::string>();
      if (!kHttpMethods.count(key)) continue;
      EXPECT_TRUE(item.second["responses"].IsMap()) << key << " " << path.first;
      EXPECT_TRUE(item.second["responses"]["default"])
          << key << " " << path.first << " has no error answer";
    }
  }
  // Every "$ref: '#/a/b/c'" names a node of this document.
  std::set<std::string> dangling;
  std::function<void(const YAML::Node&)> visit = [&](const YAML::Node& node) {
    if (node.IsMap()) {
      for (const auto& kv : node) {
        if (kv.first.as<std::string>() == "$ref") {
          const std::string ref = kv.second.as<std::string>();
          YAML::Node at = YAML::Clone(doc_);
          bool found = ref.starts_with("#/");
          std::string rest = found ? ref.substr(2) : "";
          while (found && !rest.empty()) {
            const auto slash = rest.find('/');
            const std::string part = rest.substr(0, slash);
            rest = slash == std::string::npos ? "" : rest.substr(slash + 1);
            if (!at.IsMap() || !at[part]) {
              found = false;
            } else {
              at = at[part];
            }
          }
          if (!found) dangling.insert(ref);
        } else {
          visit(kv.second);
        }
      }
    } else if (node.IsSequence()) {
      for (const auto& child : node) visit(child);
    }
  };
  visit(doc_);
  EXPECT_THAT(dangling, IsEmpty());
}

}  // namespace
}  // namespace ephemera
