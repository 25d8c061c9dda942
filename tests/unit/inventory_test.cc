// `ephemera list --inventory`: what Ansible gets from the API's list and
// the credentials this client remembers, and what it never gets.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cli/inventory.h"

namespace ephemera::cli {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

constexpr char kKeyA[] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA";
constexpr char kKeyB[] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB";

json Sandbox(const std::string& id, const std::string& state, const std::string& run,
             const std::string& name, int port, const std::string& key) {
  json s = {{"id", id},
            {"state", state},
            {"host", "127.0.0.1"},
            {"port", port},
            {"username", "user_1"},
            {"host_key", key},
            {"guest_ip", "10.0.0.2"},
            {"host_key_fingerprint", "SHA256:x"}};
  if (!run.empty()) {
    s["run_id"] = run;
    s["name"] = name;
  }
  return s;
}

TEST(InventoryTest, ReadyMachinesAreHostsOfTheirRunPinnedAndWithTheirRememberedPassword) {
  json list = json::array({Sandbox("id-1", "ready", "run-7", "ubuntu", 20001, kKeyA),
                           Sandbox("id-2", "ready", "", "", 20002, kKeyB),
                           Sandbox("id-3", "provisioning", "run-7", "fedora", 20003, kKeyB)});
  json remembered = {{"id-1",
                      {{"host", "127.0.0.1"},
                       {"port", 20001},
                       {"username", "user_1"},
                       {"password", "s3cret"},
                       {"host_key", kKeyA}}}};
  Inventory inv = BuildInventory(list, remembered, std::nullopt, "/home/u/.config/kh");
  const json& vars = inv.inventory["_meta"]["hostvars"];
  ASSERT_TRUE(vars.contains("ubuntu"));
  ASSERT_TRUE(vars.contains("id-2"));
  EXPECT_FALSE(vars.contains("fedora"));  // not ready
  EXPECT_EQ(vars["ubuntu"]["ansible_host"], "127.0.0.1");
  EXPECT_EQ(vars["ubuntu"]["ansible_port"], 20001);
  EXPECT_EQ(vars["ubuntu"]["ansible_user"], "user_1");
  EXPECT_EQ(vars["ubuntu"]["ansible_password"], "s3cret");
  EXPECT_EQ(vars["ubuntu"]["ephemera_run_id"], "run-7");
  EXPECT_EQ(vars["ubuntu"]["ephemera_host_key"], kKeyA);
  EXPECT_THAT(vars["ubuntu"]["ansible_ssh_common_args"].get<std::string>(),
              HasSubstr("StrictHostKeyChecking=yes -o UserKnownHostsFile=/home/u/.config/kh"));
  EXPECT_FALSE(vars["id-2"].contains("ansible_password"));  // not this client's
  EXPECT_EQ(inv.inventory["run_run_7"]["hosts"], json::array({"ubuntu"}));
  EXPECT_EQ(inv.inventory["ungrouped"]["hosts"], json::array({"id-2"}));
  EXPECT_THAT(inv.inventory["all"]["children"], ::testing::Contains("run_run_7"));
  EXPECT_EQ(inv.known_hosts,
            std::string("[127.0.0.1]:20001 ") + kKeyA + "\n" + "[127.0.0.1]:20002 " + kKeyB + "\n");
}

TEST(InventoryTest, ARunFilterAndSharedNamesAcrossRuns) {
  json list = json::array({Sandbox("id-1", "ready", "run-7", "vm", 20001, kKeyA),
                           Sandbox("id-2", "ready", "run-8", "vm", 20002, kKeyB)});
  Inventory both = BuildInventory(list, json::object(), std::nullopt, "/kh");
  EXPECT_TRUE(both.inventory["_meta"]["hostvars"].contains("run-7-vm"));
  EXPECT_TRUE(both.inventory["_meta"]["hostvars"].contains("run-8-vm"));
  Inventory one = BuildInventory(list, json::object(), "run-8", "/kh");
  EXPECT_EQ(one.inventory["_meta"]["hostvars"].size(), 1u);
  EXPECT_EQ(one.inventory["_meta"]["hostvars"]["vm"]["ephemera_id"], "id-2");
}

TEST(InventoryTest, AnswersThatBreakTheContractAreLeftOutAndSaidSo) {
  // A server's strings reach ssh's argv and known_hosts: a host key with a
  // newline or a host with a space must not.
  json list = json::array({Sandbox("id-1", "ready", "", "", 20001, "ssh-ed25519 AAAA\n* ssh-rsa X"),
                           Sandbox("id-2", "ready", "", "", 20002, kKeyB)});
  list[1]["host"] = "evil host";
  json remembered = {{"id-3", {{"password", "x"}}}};
  Inventory inv = BuildInventory(list, remembered, std::nullopt, "/kh");
  EXPECT_TRUE(inv.inventory["_meta"]["hostvars"].empty());
  EXPECT_TRUE(inv.known_hosts.empty());
  ASSERT_EQ(inv.skipped.size(), 2u);
  EXPECT_THAT(inv.skipped[0], HasSubstr("host_key"));
  EXPECT_THAT(inv.skipped[1], HasSubstr("host"));
}

TEST(InventoryTest, ARememberedPasswordIsUsedOnlyForTheSameHostKey) {
  json list = json::array({Sandbox("id-1", "ready", "", "", 20001, kKeyA)});
  json remembered = {{"id-1",
                      {{"host", "127.0.0.1"},
                       {"port", 20001},
                       {"username", "user_1"},
                       {"password", "s3cret"},
                       {"host_key", kKeyB}}}};
  Inventory inv = BuildInventory(list, remembered, std::nullopt, "/kh");
  EXPECT_FALSE(inv.inventory["_meta"]["hostvars"]["id-1"].contains("ansible_password"));
}

}  // namespace
}  // namespace ephemera::cli
