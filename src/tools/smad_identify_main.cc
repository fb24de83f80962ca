// smad-identify TRANSPORT-ID [--hdgst] [--ddgst]
#include <iostream>

#include "tools/identify.h"

int main(int argc, char** argv) {
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
