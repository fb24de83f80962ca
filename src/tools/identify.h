#pragma once

// smad-identify: connects to an NVMe/TCP controller and prints its Identify data and namespaces, or, for
// a discovery controller, the discovery log. The formatting functions are pure so tests can check them.

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "nvme/host/identify.h"
#include "nvme/host/transport_id.h"

namespace smad::tools {

struct IdentifyOptions {
  nvme::host::TransportId trid;
  bool hdgst = false;
  bool ddgst = false;
  bool help = false;
};

// Parses smad-identify's command line: the transport ID as the positional argument (or -r), --hdgst,
// --ddgst. On --help returns help=true and fills `help_text`. Errors: InvalidArgument.
absl::StatusOr<IdentifyOptions> ParseIdentifyArgs(int argc, const char* const* argv, std::string* help_text);

// Report sections.
std::string FormatControllerReport(const nvme::host::TransportId& trid, const nvme::host::ControllerData& data,
                                   uint32_t vs, uint64_t cap, std::optional<uint32_t> io_queues);
std::string FormatNamespaceReport(const nvme::host::NamespaceData& ns);
std::string FormatDiscoveryLog(const nvme::host::DiscoveryLog& log);

// Connects, prints the report to `out`, shuts the controller down. Errors: connection failures (with the
// NVMe status text, e.g. "Connect failed: SCT 1 SC 0x84 (connect invalid host)") and failed commands.
absl::Status RunIdentify(const IdentifyOptions& options, std::ostream& out);

}  // namespace smad::tools
