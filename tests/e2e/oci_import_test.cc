// OCI images end to end: a kernel image (an OCI layout) and a rootfs image
// (a docker-archive) made from the default image by make_oci_images.sh,
// imported through the CLI into a private catalog, booted, and logged into
// with the credentials the API returned; a re-import finds the same image;
// a rootfs without sshd is refused and leaves nothing behind.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "core/subprocess.h"
#include "e2e/daemon_fixture.h"
#include "guest/ssh_session.h"
#include "integration/guest_fixture.h"
#include "support/test_registry.h"

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;
using ::testing::HasSubstr;

// The command line of the QEMU that runs sandbox `id` ("" if none does).
std::string QemuCommandLineOf(const std::string& id) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    std::string cmdline;
    try {
      cmdline = ReadFile(entry.path() / "cmdline");
    } catch (const Error&) {
      continue;  // not a process, or gone
    }
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find("qemu-system") != std::string::npos &&
        cmdline.find("-uuid " + id + " ") != std::string::npos) {
      return cmdline;
    }
  }
  return "";
}

class OciImportTest : public test::DaemonTest {
 public:
  // Exec and files in a sandbox whose image has no agent: through the
  // daemon's own key, as the client account.
  void ExpectExecAndFilesOverSsh(const json& s) {
    const std::string id = s["id"], user = s["username"];
    ProcessResult r =
        RunProcess(Cli({"exec", id, "--", "sh", "-c", "echo out; echo err >&2; exit 7"}), 60s);
    EXPECT_EQ(r.exit_code, 7) << r.err;
    EXPECT_EQ(r.out, "out\n");
    EXPECT_EQ(r.err, "err\n");
    r = RunProcess(Cli({"exec", "-e", "GREETING=it's me", "-w", "/tmp", id, "--", "sh", "-c",
                        "echo $(id -un) \"$GREETING\" $(pwd)"}),
                   60s);
    EXPECT_EQ(r.out, user + " it's me /tmp\n") << r.err;
    // A program that closes its output and goes on is waited for.
    ExecResult e = Exec(id, {{"argv", {"sh", "-c", "exec >&- 2>&-; sleep 1; exit 3"}}});
    EXPECT_EQ(e.exit["code"], 3);
    e = Exec(id, {{"argv", {"cat"}}, {"stdin", "given whole"}});
    EXPECT_EQ(e.out, "given whole");
    EXPECT_EQ(e.exit["code"], 0);
    e = Exec(id, {{"argv", {"stty", "size"}}, {"tty", true}, {"rows", 33}, {"cols", 101}});
    EXPECT_EQ(e.out, "33 101\r\n");
    ExpectATimeoutKillsTheWholeGroup(id);
    // The client account is all the key reaches.
    test::CurlResult root = Api("POST", "/v1/sandboxes/" + id + "/exec",
                                {"--data-binary", R"({"argv": ["id"], "user": "root"})"});
    EXPECT_EQ(root.status, 400);
    EXPECT_THAT(root.body, HasSubstr("client account"));
    // Files both ways, the mode kept, the client's.
    WriteFileAtomic(state_.path() / "up.txt", "over ssh\n", 0640);
    r = RunProcess(Cli({"cp", (state_.path() / "up.txt").string(), id + ":/tmp/up.txt"}), 60s);
    ASSERT_TRUE(r.ok()) << r.err;
    EXPECT_EQ(Exec(id, {{"argv", {"stat", "-c", "%a %U", "/tmp/up.txt"}}}).out,
              "640 " + user + "\n");
    r = RunProcess(Cli({"cp", id + ":/tmp/up.txt", (state_.path() / "down.txt").string()}), 60s);
    ASSERT_TRUE(r.ok()) << r.err;
    EXPECT_EQ(ReadFile(state_.path() / "down.txt"), "over ssh\n");
    EXPECT_EQ(Api("GET", "/v1/sandboxes/" + id + "/files?path=/tmp/none").status, 404);
  }

 protected:
  void SetUp() override {
    // QEMU's own uid reaches the imported files below the test's folder.
    ::chmod(state_.path().c_str(), 0711);
    fs::create_directories(state_.path() / "images");
    ::chmod((state_.path() / "images").c_str(), 0755);
    sources_ = state_.path() / "sources";
    ProcessResult made =
        RunProcess({"bash", MAKE_OCI_IMAGES, sources_.string(), test::ImageDir().string()}, 120s);
    ASSERT_TRUE(made.ok()) << made.err;
    BeforeDaemon();
    DaemonTest::SetUp();
  }
  virtual void BeforeDaemon() {}
  fs::path ImageDirectory() const override { return state_.path() / "images"; }
  std::vector<std::string> Pull(const std::string& name, const std::string& rootfs) {
    return Cli({"image", "pull", name, "--json", "--kernel",
                "oci:" + (sources_ / "kernel").string() + ":default", "--rootfs",
                "docker-archive:" + (sources_ / rootfs).string(), "--headroom", "64"});
  }
  fs::path sources_;
};

TEST_F(OciImportTest, AKernelAndRootfsPairIsImportedBootedAndLoggedInto) {
  json imported = json::parse(Output(Pull("kt-default", "rootfs.tar")));
  EXPECT_EQ(imported["cached"], false);
  EXPECT_THAT(imported["kernel_digest"].get<std::string>(), ::testing::StartsWith("sha256:"));
  const fs::path dir = imported["dir"].get<std::string>();
  EXPECT_EQ(fs::read_symlink(ImageDirectory() / "kt-default"), dir.filename());
  json manifest = json::parse(ReadFile(dir / "manifest.json"));
  EXPECT_EQ(manifest["format"], "kernel");
  EXPECT_EQ(manifest["rootfs_digest"], imported["rootfs_digest"]);

  json s = Create({"--image", "kt-default"});
  EXPECT_EQ(s["image"], "kt-default");
  SshSession client(s["host"], s["port"].get<std::uint16_t>(), s["username"], 30s);
  EXPECT_EQ(client.HostKeyFingerprint(), s["host_key_fingerprint"]);
  ASSERT_TRUE(client.AuthenticateWithPassword(s["password"]));
  EXPECT_EQ(client.Execute("id -un", 30s).out, s["username"].get<std::string>() + "\n");
  // Not while a sandbox boots from it; nor pruned from under it once the
  // name points at newer content.
  ProcessResult rm = RunProcess(Cli({"image", "rm", "kt-default"}));
  EXPECT_NE(rm.exit_code, 0);
  EXPECT_THAT(rm.err, HasSubstr("in use by sandbox " + s["id"].get<std::string>()));
  std::vector<std::string> newer = Pull("kt-default", "rootfs.tar");
  newer.back() = "65";  // another headroom: another image
  json second = json::parse(Output(newer));
  EXPECT_NE(second["dir"], imported["dir"]);
  Output(Cli({"image", "prune"}));
  EXPECT_TRUE(fs::exists(dir / "rootfs.ext4"));
  EXPECT_EQ(client.Execute("echo still-here", 30s).out, "still-here\n");
  Output(Cli({"destroy", s["id"]}));
  json pruned = json::parse(Output(Cli({"image", "prune", "--json"})));
  EXPECT_EQ(pruned["removed"], json::array({dir.filename().string()}));
  EXPECT_FALSE(fs::exists(dir));

  // The same content again: found, not rebuilt.
  json again = json::parse(Output(newer));
  EXPECT_EQ(again["cached"], true);
  EXPECT_EQ(again["dir"], second["dir"]);
  Output(Cli({"image", "rm", "kt-default"}));
  EXPECT_FALSE(fs::exists(second["dir"].get<std::string>()));
  EXPECT_TRUE(json::parse(Output(Cli({"image", "list", "--json"}))).empty());
  ExpectNothingLeft();
}

// A root filesystem of a distribution (Debian bookworm from its packages,
// systemd, openssh-server, sudo, root:root as kernel-testing's images set
// it) gets the guest contract at import and works as any sandbox: the
// credentials the API returned log in, and the image's password does not.
TEST_F(OciImportTest, ADebianRootfsWithSystemdGetsTheGuestContractAndNoWellKnownPassword) {
  ProcessResult made = RunProcess({"bash", MAKE_DEBIAN_ROOTFS, (sources_ / "debian.tar").string()},
                                  std::chrono::minutes(10));
  ASSERT_TRUE(made.ok()) << made.err;
  json imported = json::parse(Output(Pull("kt-debian", "debian.tar")));
  json manifest = json::parse(ReadFile(imported["dir"].get<std::string>() + "/manifest.json"));
  EXPECT_EQ(manifest["guest_contract"], "added");
  // systemd and a distribution's tools outgrow the configured 32 MiB of
  // TCG translation cache: the image asks for more, and its QEMU gets it.
  EXPECT_EQ(manifest["tcg_tb_size_mib"], 128);

  json s = Create({"--image", "kt-debian"});
  EXPECT_THAT(QemuCommandLineOf(s["id"]), HasSubstr("tcg,tb-size=128"));
  SshSession client(s["host"], s["port"].get<std::uint16_t>(), s["username"], 30s);
  EXPECT_EQ(client.HostKeyFingerprint(), s["host_key_fingerprint"]);
  ASSERT_TRUE(client.AuthenticateWithPassword(s["password"]));
  EXPECT_EQ(client.Execute("id -un", 30s).out, s["username"].get<std::string>() + "\n");
  EXPECT_EQ(client.Execute("cat /proc/1/comm", 30s).out, "systemd\n");
  const std::string password = s["password"];
  // What the import masked or trimmed left the boot whole: no unit failed.
  // (As root: the image has no D-Bus for systemctl to reach systemd by.)
  CommandResult state =
      client.Execute("echo '" + password + "' | sudo -S -p '' systemctl is-system-running", 30s);
  EXPECT_EQ(state.out, "running\n") << state.err;
  // The image's root password is locked, and so is the endpoint.
  CommandResult shadow =
      client.Execute("echo '" + password +
                         "' | sudo -S -p '' awk -F: '$1 == \"root\" || $1 == \"endpoint\" "
                         "{ print $1 \" \" $2 }' /etc/shadow",
                     30s);
  EXPECT_EQ(shadow.out, "root !\nendpoint !\n") << shadow.err;
  SshSession as_root(s["host"], s["port"].get<std::uint16_t>(), "root", 30s);
  EXPECT_FALSE(as_root.AuthenticateWithPassword("root"));
  ExpectExecAndFilesOverSsh(s);
  Output(Cli({"destroy", s["id"]}));
  ExpectNothingLeft();
}

// A root filesystem that carries Debian's kernel (linux-image-amd64) is an
// image by itself: its /boot/vmlinuz is unpacked and booted, with
// ephemera's initrd (the default image's) holding that kernel's modules.
TEST_F(OciImportTest, ARootfsWithItsOwnKernelBootsThatKernel) {
  ProcessResult made = RunProcess(
      {"bash", MAKE_DEBIAN_ROOTFS, "--with-kernel", (sources_ / "debian-kernel.tar").string()},
      std::chrono::minutes(10));
  ASSERT_TRUE(made.ok()) << made.err;
  // Without ephemera's initrd (no default image here yet): named.
  ProcessResult refused =
      RunProcess(Cli({"image", "pull", "kt-own", "--rootfs",
                      "docker-archive:" + (sources_ / "debian-kernel.tar").string()}),
                 120s);
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_THAT(refused.err, HasSubstr("needs ephemera's initrd"));
  fs::create_directory_symlink(fs::canonical(test::ImageDir() / "default"),
                               ImageDirectory() / "default");

  json imported = json::parse(Output(
      Cli({"image", "pull", "kt-own", "--json", "--rootfs",
           "docker-archive:" + (sources_ / "debian-kernel.tar").string(), "--headroom", "64"})));
  EXPECT_EQ(imported["kernel_digest"], "");
  json manifest = json::parse(ReadFile(imported["dir"].get<std::string>() + "/manifest.json"));
  const std::string source = manifest["source"]["kernel"];
  EXPECT_THAT(source, ::testing::MatchesRegex("the rootfs's own \\([0-9][^)]*-amd64\\)"));
  const std::string version =
      source.substr(source.find('(') + 1, source.size() - source.find('(') - 2);

  json s = Create({"--image", "kt-own"});
  SshSession client(s["host"], s["port"].get<std::uint16_t>(), s["username"], 30s);
  ASSERT_TRUE(client.AuthenticateWithPassword(s["password"]));
  EXPECT_EQ(client.Execute("uname -r", 30s).out, version + "\n");
  const std::string password = s["password"];
  CommandResult state =
      client.Execute("echo '" + password + "' | sudo -S -p '' systemctl is-system-running", 30s);
  EXPECT_EQ(state.out, "running\n") << state.err;
  Output(Cli({"destroy", s["id"]}));
  ExpectNothingLeft();
}

// What a kernel-testing pipeline does: create each machine of a run from
// its kernel and rootfs references (pulled by the first create), with
// addresses derived from the run, then drive them from an Ansible inventory.
TEST_F(OciImportTest, APipelineCreatesFromReferencesAndDrivesItsMachinesByInventory) {
  const std::vector<std::string> pair = {
      "--kernel", "oci:" + (sources_ / "kernel").string() + ":default", "--rootfs",
      "docker-archive:" + (sources_ / "rootfs.tar").string()};
  std::vector<std::string> args = pair;
  args.insert(args.end(), {"--run-id", "run-1", "--name", "vm-a"});
  json s = Create(args);
  EXPECT_THAT(s["image"].get<std::string>(), ::testing::MatchesRegex("pair-[0-9a-f]{16}"));
  EXPECT_EQ(s["run_id"], "run-1");
  EXPECT_EQ(s["name"], "vm-a");
  EXPECT_THAT(s["tap"].get<std::string>(), ::testing::MatchesRegex("ephr[0-9a-f]{10}"));
  EXPECT_TRUE(fs::exists(ImageDirectory() / s["image"].get<std::string>() / "rootfs.ext4"));
  json inspected =
      json::parse(Output(Cli({"image", "inspect", s["image"].get<std::string>(), "--json"})));
  EXPECT_EQ(inspected["source"]["rootfs"], "docker-archive:" + (sources_ / "rootfs.tar").string());
  EXPECT_EQ(inspected["used_by"], json::array({s["id"]}));
  EXPECT_GT(inspected["disk_bytes"].get<std::uint64_t>(), 0u);

  // The same machine of the run again is refused and changes nothing.
  std::vector<std::string> again = {"create", "--json"};
  again.insert(again.end(), args.begin(), args.end());
  ProcessResult twice = RunProcess(Cli(again), 180s);
  EXPECT_NE(twice.exit_code, 0);
  EXPECT_THAT(twice.err, HasSubstr("run 'run-1' already has a machine named 'vm-a'"));
  EXPECT_EQ(List().size(), 1u);

  // The inventory logs in with the pinned key and the remembered password.
  json inventory = json::parse(Output(Cli({"list", "--inventory", "--run-id", "run-1"})));
  EXPECT_EQ(inventory["run_run_1"]["hosts"], json::array({"vm-a"}));
  const json& vm = inventory["_meta"]["hostvars"]["vm-a"];
  EXPECT_EQ(vm["ephemera_id"], s["id"]);
  EXPECT_EQ(vm["ephemera_host_key_fingerprint"], s["host_key_fingerprint"]);
  const std::string args_line = vm["ansible_ssh_common_args"];
  const std::string known_hosts = args_line.substr(args_line.find("UserKnownHostsFile=") + 19);
  ProcessResult found = RunProcess({"ssh-keygen", "-l", "-F",
                                    "[127.0.0.1]:" + std::to_string(vm["ansible_port"].get<int>()),
                                    "-f", known_hosts});
  EXPECT_THAT(found.out, HasSubstr(s["host_key_fingerprint"].get<std::string>())) << found.err;
  SshSession client(vm["ansible_host"], vm["ansible_port"].get<std::uint16_t>(), vm["ansible_user"],
                    30s);
  EXPECT_EQ(client.HostKeyFingerprint(), s["host_key_fingerprint"]);
  ASSERT_TRUE(client.AuthenticateWithPassword(vm["ansible_password"]));
  EXPECT_EQ(client.Execute("id -un", 30s).out, vm["ansible_user"].get<std::string>() + "\n");

  // A rerun gets the same /30 and TAP, and the pair is not imported again.
  Output(Cli({"destroy", s["id"]}));
  json rerun = Create(args);
  EXPECT_EQ(rerun["subnet"], s["subnet"]);
  EXPECT_EQ(rerun["tap"], s["tap"]);
  EXPECT_EQ(rerun["image"], s["image"]);
  EXPECT_THAT(DaemonLog(), ::testing::Not(HasSubstr("already imported")));
  Output(Cli({"destroy", rerun["id"]}));
  ExpectNothingLeft();
}

TEST_F(OciImportTest, ARootfsWithoutSshdOrABadReferenceIsRefusedLeavingNothing) {
  ProcessResult r = RunProcess(Pull("bare", "no-sshd.tar"), 120s);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("no-sshd.tar"));
  EXPECT_THAT(r.err, HasSubstr("has no sshd"));
  r = RunProcess(Cli({"image", "pull", "x", "--kernel", "ftp://nowhere", "--rootfs", "oci:/x"}));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("expected oci:DIR"));
  r = RunProcess(Pull("../escape", "rootfs.tar"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("not a valid image name"));
  // Nothing but the import locks: no image, no staging folder.
  for (const auto& entry : fs::directory_iterator(ImageDirectory())) {
    EXPECT_THAT(entry.path().filename().string(), HasSubstr(".import.lock")) << entry.path();
  }
  EXPECT_TRUE(json::parse(Output(Cli({"image", "list", "--json"}))).empty());
  json status = json::parse(Output(Cli({"status", "--json"})));
  EXPECT_EQ(status["sandboxes"], 0);
}

// The same pair pushed to a real registry (HTTPS with a test CA, htpasswd
// auth), configured under registries: and images:, and pulled by the first
// create that names the image.
class OciRegistryImportTest : public OciImportTest {
 protected:
  void BeforeDaemon() override {
    registry_ = std::make_unique<test::TestRegistry>(state_.path() / "registry",
                                                     test::TestRegistry::Mode::kTls);
    registry_->Push("oci:" + (sources_ / "kernel").string() + ":default", "kt/kernel:1");
    registry_->Push("docker-archive:" + (sources_ / "rootfs.tar").string(), "kt/rootfs:1");
  }
  std::string ExtraConfig() const override {
    return "registries:\n"
           "  - host: \"" +
           registry_->host() +
           "\"\n"
           "    ca_file: " +
           registry_->ca_file().string() +
           "\n"
           "    credentials_file: " +
           registry_->credentials_file().string() +
           "\n"
           "images:\n"
           "  kt-registry:\n"
           "    kernel: " +
           registry_->Ref("kt/kernel:1") +
           "\n"
           "    rootfs: " +
           registry_->Ref("kt/rootfs:1") +
           "\n"
           "    headroom_mib: 64\n"
           "pull:\n"
           "  stall_timeout_seconds: 5\n";
  }
  std::unique_ptr<test::TestRegistry> registry_;
};

TEST_F(OciRegistryImportTest, AConfiguredRegistryImageIsPulledByItsFirstCreateAndLoggedInto) {
  json s = Create({"--image", "kt-registry"});
  EXPECT_EQ(s["image"], "kt-registry");
  SshSession client(s["host"], s["port"].get<std::uint16_t>(), s["username"], 30s);
  EXPECT_EQ(client.HostKeyFingerprint(), s["host_key_fingerprint"]);
  ASSERT_TRUE(client.AuthenticateWithPassword(s["password"]));
  EXPECT_EQ(client.Execute("id -un", 30s).out, s["username"].get<std::string>() + "\n");
  json images = json::parse(Output(Cli({"image", "list", "--json"})));
  EXPECT_TRUE(std::any_of(images.begin(), images.end(), [](const json& i) {
    return i["name"] == "kt-registry";
  })) << images.dump();
  // The layers stay in the blob store: a pull by hand finds them all, and
  // says so layer by layer (streamed progress; a line per layer off a terminal).
  ProcessResult pulled = RunProcess(Cli({"image", "pull", "kt-registry", "--json"}), 120s);
  ASSERT_TRUE(pulled.ok()) << pulled.err;
  json again = json::parse(pulled.out);
  EXPECT_EQ(again["cached"], true);
  EXPECT_THAT(pulled.err, HasSubstr(registry_->Ref("kt/kernel:1") + ": layer 1/"));
  EXPECT_THAT(pulled.err, HasSubstr(", in the blob store"));
  // The folder names every blob it came from, configs too, so that prune
  // keeps them all: both images' config and layer.
  json manifest = json::parse(ReadFile(again["dir"].get<std::string>() + "/manifest.json"));
  EXPECT_EQ(manifest["blobs"].size(), 4u) << manifest.dump();
  Output(Cli({"destroy", s["id"]}));

  // A reference the registry does not have: refused, naming it; the daemon serves on.
  ProcessResult r =
      RunProcess(Cli({"image", "pull", "other", "--kernel", registry_->Ref("kt/kernel:1"),
                      "--rootfs", registry_->Ref("kt/missing:1")}),
                 120s);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr(registry_->Ref("kt/missing:1")));
  EXPECT_THAT(r.err, HasSubstr("not found"));
  json status = json::parse(Output(Cli({"status", "--json"})));
  EXPECT_EQ(status["sandboxes"], 0);
  ExpectNothingLeft();
}

}  // namespace
}  // namespace ephemera
