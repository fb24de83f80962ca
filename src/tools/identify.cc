#include "tools/identify.h"

#include <ostream>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fmt/format.h"
#include "nvme/host/commands.h"
#include "nvme/host/sync_controller.h"

namespace smad::tools {

using nvme::host::ControllerData;
using nvme::host::DiscoveryLog;
using nvme::host::NamespaceData;
using nvme::host::TransportId;

namespace {

constexpr int kLabelWidth = 40;

std::string Row(const std::string& label, const std::string& value) {
  return fmt::format("{:<{}}{}\n", label + ":", kLabelWidth, value);
}

std::string Title(const std::string& title) { return title + "\n" + std::string(title.size(), '=') + "\n"; }

const char* Supported(bool yes) { return yes ? "Supported" : "Not Supported"; }

std::string Hex(const uint8_t* bytes, size_t n, bool upper) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += upper ? fmt::format("{:02X}", bytes[i]) : fmt::format("{:02x}", bytes[i]);
  return out;
}

std::string Blocks(uint64_t blocks, uint32_t block_size) {
  double gib = static_cast<double>(blocks) * block_size / (1024.0 * 1024 * 1024);
  return fmt::format("{} ({:.2f} GiB)", blocks, gib);
}

}  // namespace

absl::StatusOr<IdentifyOptions> ParseIdentifyArgs(int argc, const char* const* argv, std::string* help_text) {
  IdentifyOptions options;
  std::string positional, flag;
  CLI::App app{"smad-identify: print an NVMe/TCP controller's Identify data and namespaces, or a discovery "
               "controller's discovery log",
               "smad-identify"};
  app.add_option("transport-id", positional,
                 "SPDK transport ID: 'trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn...' "
                 "(subnqn defaults to the discovery NQN)");
  app.add_option("-r,--transport-id", flag, "Same as the positional argument");
  app.add_flag("--hdgst", options.hdgst, "Request NVMe/TCP header digests");
  app.add_flag("--ddgst", options.ddgst, "Request NVMe/TCP data digests");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    options.help = true;
    if (help_text != nullptr) *help_text = app.help();
    return options;
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  if (positional.empty() == flag.empty()) {
    return absl::InvalidArgumentError("give the transport ID once: as the argument or with -r");
  }
  auto trid = nvme::host::ParseTransportId(positional.empty() ? flag : positional);
  if (!trid.ok()) return trid.status();
  options.trid = *std::move(trid);
  return options;
}

std::string FormatControllerReport(const TransportId& trid, const ControllerData& c, uint32_t vs, uint64_t cap,
                                   std::optional<uint32_t> io_queues) {
  std::string out;
  std::string rule(53, '=');
  out += rule + "\n";
  out += fmt::format("NVMe/TCP Controller at {}:{} subnqn:{}\n", trid.traddr, trid.trsvcid, trid.subnqn);
  out += rule + "\n";
  out += Title("Controller Capabilities/Features");
  out += Row("Vendor ID", fmt::format("{:04x}", c.vid));
  out += Row("Subsystem Vendor ID", fmt::format("{:04x}", c.ssvid));
  out += Row("Serial Number", c.serial);
  out += Row("Model Number", c.model);
  out += Row("Firmware Version", c.firmware);
  out += Row("Recommended Arb Burst", std::to_string(c.rab));
  out += Row("IEEE OUI Identifier", fmt::format("{:02x} {:02x} {:02x}", c.ieee[0], c.ieee[1], c.ieee[2]));
  out += Row("Controller ID (CNTLID)", fmt::format("{} (0x{:04x})", c.cntlid, c.cntlid));
  const char* type = c.cntrltype == 1 ? "I/O" : c.cntrltype == 2 ? "Discovery" : c.cntrltype == 3 ? "Administrative"
                                                                                                   : "Not reported";
  out += Row("Controller Type", type);
  uint64_t mdts = c.MaxTransferBytes(nvme::host::CapMpsMinBytes(cap));
  out += Row("Max Data Transfer Size", mdts == 0 ? std::string("Unlimited") : std::to_string(mdts));
  out += Row("Max Number of Namespaces", std::to_string(c.nn));
  if (io_queues.has_value()) out += Row("Number of I/O Queues Granted", std::to_string(*io_queues));
  out += Row("NVMe Specification Version (VS)", nvme::host::VersionString(vs));
  out += Row("NVMe Specification Version (Identify)", nvme::host::VersionString(c.ver));
  out += Row("Maximum Queue Entries", std::to_string(nvme::host::CapMqes(cap) + 1));
  out += Row("Reset Timeout", fmt::format("{} ms", nvme::host::CapTimeoutMs(cap)));
  out += Row("Memory Page Size Minimum", fmt::format("{} bytes", nvme::host::CapMpsMinBytes(cap)));
  out += Row("Multi-path I/O: multiple ports", c.cmic & 1 ? "Yes" : "No");
  out += Row("Multi-path I/O: multiple controllers", c.cmic & 2 ? "Yes" : "No");
  out += Row("Keep Alive", c.kas == 0 ? std::string("Not Supported")
                                      : fmt::format("Supported, granularity {} ms", c.kas * 100u));
  out += Row("Abort Command Limit", std::to_string(c.acl + 1u));
  out += Row("Async Event Request Limit", std::to_string(c.aerl + 1u));
  out += Row("Error Log Page Entries", std::to_string(c.elpe + 1u));
  out += Row("Subsystem NQN", c.subnqn);
  out += "\n" + Title("NVM Command Set Attributes");
  out += Row("Submission Queue Entry Size", fmt::format("min {} max {}", 1u << (c.sqes & 0xf), 1u << (c.sqes >> 4)));
  out += Row("Completion Queue Entry Size", fmt::format("min {} max {}", 1u << (c.cqes & 0xf), 1u << (c.cqes >> 4)));
  out += Row("Maximum Outstanding Commands", std::to_string(c.maxcmd));
  out += Row("Compare Command", Supported(c.oncs & 0x01));
  out += Row("Write Uncorrectable Command", Supported(c.oncs & 0x02));
  out += Row("Dataset Management Command", Supported(c.oncs & 0x04));
  out += Row("Write Zeroes Command", Supported(c.oncs & 0x08));
  out += Row("Reservations", Supported(c.oncs & 0x20));
  out += Row("Volatile Write Cache", c.vwc & 1 ? "Present" : "Not Present");
  out += Row("Fused Compare & Write", Supported(c.fuses & 1));
  out += Row("SGLs", fmt::format("0x{:08x}", c.sgls));
  out += Row("  SGL Command Set", Supported((c.sgls & 0x3) != 0));
  out += Row("  SGL Keyed", Supported(c.sgls & (1u << 2)));
  out += Row("  SGL Bit Bucket Descriptor", Supported(c.sgls & (1u << 16)));
  out += Row("  SGL Offset", Supported(c.sgls & (1u << 20)));
  out += Row("  Transport SGL Data Block", Supported(c.sgls & (1u << 21)));
  out += "\n" + Title("NVMe over Fabrics Attributes");
  out += Row("I/O Command Capsule Size (IOCCSZ)",
             fmt::format("{} ({} bytes, {} bytes in-capsule data)", c.ioccsz, c.ioccsz * 16, c.InCapsuleDataBytes()));
  out += Row("I/O Response Capsule Size (IORCSZ)", fmt::format("{} ({} bytes)", c.iorcsz, c.iorcsz * 16));
  out += Row("In Capsule Data Offset (ICDOFF)", std::to_string(c.icdoff));
  out += Row("Controller Model", c.fcatt & 1 ? "Static" : "Dynamic");
  out += Row("Max SGL Data Block Descriptors", std::to_string(c.msdbd));
  return out;
}

std::string FormatNamespaceReport(const NamespaceData& ns) {
  std::string out;
  uint32_t bs = ns.block_size();
  out += Row("Namespace ID", std::to_string(ns.nsid));
  out += Row("Size (in LBAs)", Blocks(ns.nsze, bs));
  out += Row("Capacity (in LBAs)", Blocks(ns.ncap, bs));
  out += Row("Utilization (in LBAs)", Blocks(ns.nuse, bs));
  out += Row("Thin Provisioning", Supported(ns.nsfeat & 1));
  out += Row("Namespace Sharing Capabilities", ns.nmic & 1 ? "Multiple Controllers" : "Private");
  out += Row("NGUID", ns.has_nguid() ? Hex(ns.nguid.data(), 16, true) : std::string("Not reported"));
  out += Row("EUI64", ns.has_eui64() ? Hex(ns.eui64.data(), 8, true) : std::string("Not reported"));
  out += Row("UUID", ns.uuid.has_value() ? ns.uuid->ToString() : std::string("Not reported"));
  out += Row("Number of LBA Formats", std::to_string(ns.lba_formats.size()));
  out += Row("Current LBA Format", fmt::format("LBA Format #{:02}", ns.current_format()));
  out += Row("Block Size", std::to_string(bs));
  for (size_t i = 0; i < ns.lba_formats.size(); ++i) {
    const auto& f = ns.lba_formats[i];
    out += fmt::format("LBA Format #{:02}: Data Size: {:5}  Metadata Size: {:5}\n", i, f.data_size(),
                       f.metadata_size);
  }
  return out;
}

std::string FormatDiscoveryLog(const DiscoveryLog& log) {
  std::string out = Title("Discovery Log Page");
  out += Row("Generation Counter", std::to_string(log.genctr));
  out += Row("Number of Records", std::to_string(log.numrec));
  out += Row("Record Format", std::to_string(log.recfmt));
  for (size_t i = 0; i < log.entries.size(); ++i) {
    const auto& e = log.entries[i];
    std::string title = fmt::format("Discovery Log Entry {}", i);
    out += "\n" + title + "\n" + std::string(title.size(), '-') + "\n";
    out += Row("Transport Type", fmt::format("{} ({})", e.trtype, nvme::host::TrtypeName(e.trtype)));
    out += Row("Address Family", fmt::format("{} ({})", e.adrfam, nvme::host::AdrfamName(e.adrfam)));
    out += Row("Subsystem Type", fmt::format("{} ({})", e.subtype, nvme::host::SubtypeName(e.subtype)));
    out += Row("Transport Requirements", (e.treq & 0x3) == 1 ? "Secure Channel Required"
                                                              : (e.treq & 0x3) == 2 ? "Secure Channel Not Required"
                                                                                    : "Not Specified");
    out += Row("Port ID", fmt::format("{} (0x{:04x})", e.portid, e.portid));
    out += Row("Controller ID", fmt::format("{} (0x{:04x})", e.cntlid, e.cntlid));
    out += Row("Admin Max SQ Size", std::to_string(e.asqsz));
    out += Row("Transport Service Identifier", e.trsvcid);
    out += Row("NVM Subsystem Qualified Name", e.subnqn);
    out += Row("Transport Address", e.traddr);
  }
  return out;
}

absl::Status RunIdentify(const IdentifyOptions& options, std::ostream& out) {
  nvme::host::SyncController::Options sync_options;
  sync_options.controller.hdgst = options.hdgst;
  sync_options.controller.ddgst = options.ddgst;
  auto ctrl_or = nvme::host::SyncController::Connect(options.trid, sync_options);
  if (!ctrl_or.ok()) {
    return absl::Status(ctrl_or.status().code(), absl::StrCat("cannot connect to ", options.trid.Describe(), ": ",
                                                              ctrl_or.status().message()));
  }
  auto& ctrl = **ctrl_or;
  std::optional<uint32_t> io_queues;
  if (!ctrl.is_discovery()) io_queues = ctrl.io_queues_granted();
  out << FormatControllerReport(options.trid, ctrl.controller_data(), ctrl.vs(), ctrl.cap(), io_queues);
  if (ctrl.is_discovery()) {
    auto log = ctrl.GetDiscoveryLog();
    if (!log.ok()) return log.status();
    out << "\n" << FormatDiscoveryLog(*log);
  } else {
    auto namespaces = ctrl.Namespaces();
    if (!namespaces.ok()) return namespaces.status();
    out << "\n" << Title("Active Namespaces");
    if (namespaces->empty()) out << "No active namespaces\n";
    for (const NamespaceData& ns : *namespaces) out << FormatNamespaceReport(ns) << "\n";
  }
  out.flush();
  return ctrl.Shutdown();
}

}  // namespace smad::tools
