// An example of libephemera-client: makes a sandbox, runs a program in it,
// copies a file out, and destroys it.
//   run_in_sandbox [SOCKET]     (default /run/ephemera/ephemera.sock, as root)
#include <cstdio>
#include <filesystem>

#include "ephemera/client.h"

int main(int argc, char** argv) {
  ephemera::client::Options options;
  if (argc > 1) options.socket = argv[1];
  ephemera::client::Client client(options);
  try {
    ephemera::client::Sandbox sandbox = client.Create({{"memory_mib", 256}, {"ttl_seconds", 600}});
    std::printf("sandbox %s: ssh -p %u %s@%s\n", sandbox.id.c_str(), sandbox.port,
                sandbox.username.c_str(), sandbox.host.c_str());

    ephemera::client::ExecOptions exec;
    exec.stdin_data = "hello from the host\n";
    exec.token = sandbox.token;
    auto run = client.Exec(sandbox.id, {"sh", "-c", "uname -r; cat > /tmp/greeting; exit 3"}, exec);
    std::printf("kernel %s", run.out.c_str());
    std::printf("exit code %d\n", run.exit_code.value_or(-1));

    const auto local = std::filesystem::temp_directory_path() / "greeting.txt";
    client.Download(sandbox.id, "/tmp/greeting", local, sandbox.token);
    std::printf("copied /tmp/greeting to %s (%ju bytes)\n", local.c_str(),
                static_cast<std::uintmax_t>(std::filesystem::file_size(local)));

    client.Destroy(sandbox.id, sandbox.token);
    std::printf("destroyed %s\n", sandbox.id.c_str());
    return 0;
  } catch (const ephemera::client::Error& e) {
    std::fprintf(stderr, "run_in_sandbox: %s (HTTP %u)\n", e.what(), e.status());
    return 1;
  }
}
