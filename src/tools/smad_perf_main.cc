// smad-perf -r TRANSPORT-ID -q DEPTH -o SIZE -w WORKLOAD -t SECONDS [-M READ%] [-c CPUMASK] [--hdgst]
//           [--ddgst] [--ns NSID] [--verify] [--no-busy-poll]
#include <iostream>

#include "spdlog/spdlog.h"

#include "tools/perf.h"

int main(int argc, char** argv) {
  // Failures reach the user as this tool's own error message; the library's warnings would repeat them.
  spdlog::set_level(spdlog::level::err);
  std::string help;
  auto options = smad::tools::ParsePerfArgs(argc, argv, &help);
  if (!options.ok()) {
    std::cerr << "smad-perf: " << options.status().message() << "\nRun with --help for usage.\n";
    return 1;
  }
  if (options->help) {
    std::cout << help;
    return 0;
  }
  auto result = smad::tools::RunPerf(*options, std::cout);
  if (!result.ok()) {
    std::cerr << "smad-perf: " << result.status().message() << "\n";
    return 1;
  }
  std::cout << smad::tools::FormatPerfReport(*options, *result) << std::flush;
  return result->total.errors == 0 && result->total.verify_failures == 0 ? 0 : 1;
}
