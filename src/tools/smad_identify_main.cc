// smad-identify TRANSPORT-ID [--hdgst] [--ddgst]
#include <iostream>

#include "spdlog/spdlog.h"

#include "tools/identify.h"

int main(int argc, char** argv) {
  // Failures reach the user as this tool's own error message; the library's warnings would repeat them.
  spdlog::set_level(spdlog::level::err);
  std::string help;
  auto options = smad::tools::ParseIdentifyArgs(argc, argv, &help);
  if (!options.ok()) {
    std::cerr << "smad-identify: " << options.status().message() << "\nRun with --help for usage.\n";
    return 1;
  }
  if (options->help) {
    std::cout << help;
    return 0;
  }
  absl::Status status = smad::tools::RunIdentify(*options, std::cout);
  if (!status.ok()) {
    std::cerr << "smad-identify: " << status.message() << "\n";
    return 1;
  }
  return 0;
}
