// ephemera: the command-line client.
#include <CLI/CLI.hpp>

int main(int argc, char** argv) {
  CLI::App app{"ephemera: create, inspect and destroy disposable Linux machines"};
  app.set_version_flag("--version", "ephemera 0.1.0");
  CLI11_PARSE(app, argc, argv);
  return 0;
}
