#include "nvme/host/identify.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "nvme/spec.h"

namespace smad::nvme::host {
namespace {

// A padded text field without its padding (spaces for Identify strings, NULs for NQNs, either here).
std::string Text(const uint8_t* field, size_t size) {
  std::string text = GetPadded(field, size);
  size_t nul = text.find('\0');
  if (nul != std::string::npos) text.resize(nul);
  return std::string(absl::StripTrailingAsciiWhitespace(text));
}

// True when every byte of `field` after its text (as Text() reads it) is NUL or space padding.
bool PaddingOnly(const uint8_t* field, size_t size) {
  for (size_t i = Text(field, size).size(); i < size; ++i) {
    if (field[i] != 0 && field[i] != ' ') return false;
  }
  return true;
}

template <size_t N>
bool AllZero(const std::array<uint8_t, N>& bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; });
}

absl::Status TooShort(const char* what, size_t need, size_t have) {
  return absl::InvalidArgumentError(absl::StrCat(what, " needs ", need, " bytes, got ", have));
}

}  // namespace

uint32_t NamespaceData::block_size() const {
  uint32_t index = current_format();
  if (index >= lba_formats.size()) return 0;
  return lba_formats[index].data_size();
}

bool NamespaceData::has_nguid() const { return !AllZero(nguid); }
bool NamespaceData::has_eui64() const { return !AllZero(eui64); }

absl::StatusOr<ControllerData> ParseControllerData(absl::Span<const uint8_t> data) {
  if (data.size() < kIdentifySize) return TooShort("Identify Controller data", kIdentifySize, data.size());
  const uint8_t* p = data.data();
  ControllerData c;
  c.vid = Load16(p + id_ctrl::kVid);
  c.ssvid = Load16(p + id_ctrl::kSsvid);
  c.serial = Text(p + id_ctrl::kSn, 20);
  c.model = Text(p + id_ctrl::kMn, 40);
  c.firmware = Text(p + id_ctrl::kFr, 8);
  c.rab = p[id_ctrl::kRab];
  std::memcpy(c.ieee.data(), p + id_ctrl::kIeee, 3);
  c.cmic = p[id_ctrl::kCmic];
  c.mdts = p[id_ctrl::kMdts];
  c.cntlid = Load16(p + id_ctrl::kCntlid);
  c.ver = Load32(p + id_ctrl::kVer);
  c.rtd3e = Load32(p + 88);
  c.oaes = Load32(p + id_ctrl::kOaes);
  c.ctratt = Load32(p + id_ctrl::kCtratt);
  c.cntrltype = p[id_ctrl::kCntrltype];
  c.oacs = Load16(p + 256);
  c.acl = p[id_ctrl::kAcl];
  c.aerl = p[id_ctrl::kAerl];
  c.frmw = p[id_ctrl::kFrmw];
  c.lpa = p[id_ctrl::kLpa];
  c.elpe = p[id_ctrl::kElpe];
  c.kas = Load16(p + id_ctrl::kKas);
  c.sqes = p[id_ctrl::kSqes];
  c.cqes = p[id_ctrl::kCqes];
  c.maxcmd = Load16(p + id_ctrl::kMaxcmd);
  c.nn = Load32(p + id_ctrl::kNn);
  c.oncs = Load16(p + id_ctrl::kOncs);
  c.fuses = Load16(p + id_ctrl::kFuses);
  c.vwc = p[id_ctrl::kVwc];
  c.sgls = Load32(p + id_ctrl::kSgls);
  c.mnan = Load32(p + id_ctrl::kMnan);
  c.subnqn = Text(p + id_ctrl::kSubnqn, 256);
  c.ioccsz = Load32(p + id_ctrl::kIoccsz);
  c.iorcsz = Load32(p + id_ctrl::kIorcsz);
  c.icdoff = Load16(p + id_ctrl::kIcdoff);
  c.fcatt = p[id_ctrl::kFcatt];
  c.msdbd = p[id_ctrl::kMsdbd];
  return c;
}

absl::StatusOr<NamespaceData> ParseNamespaceData(uint32_t nsid, absl::Span<const uint8_t> data) {
  if (data.size() < kIdentifySize) return TooShort("Identify Namespace data", kIdentifySize, data.size());
  const uint8_t* p = data.data();
  NamespaceData ns;
  ns.nsid = nsid;
  ns.nsze = Load64(p + id_ns::kNsze);
  ns.ncap = Load64(p + id_ns::kNcap);
  ns.nuse = Load64(p + id_ns::kNuse);
  ns.nsfeat = p[id_ns::kNsfeat];
  ns.nlbaf = p[id_ns::kNlbaf];
  ns.flbas = p[id_ns::kFlbas];
  ns.nmic = p[id_ns::kNmic];
  ns.dlfeat = p[id_ns::kDlfeat];
  std::memcpy(ns.nguid.data(), p + id_ns::kNguid, 16);
  std::memcpy(ns.eui64.data(), p + id_ns::kEui64, 8);
  size_t count = std::min<size_t>(static_cast<size_t>(ns.nlbaf) + 1, 64);
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* f = p + id_ns::kLbaf0 + 4 * i;
    LbaFormat format;
    format.metadata_size = Load16(f);
    format.lbads = f[2];
    format.relative_performance = f[3] & 0x3;
    ns.lba_formats.push_back(format);
  }
  return ns;
}

absl::Status ApplyNamespaceDescriptors(absl::Span<const uint8_t> data, NamespaceData& ns) {
  size_t pos = 0;
  while (pos + 4 <= data.size()) {
    uint8_t nidt = data[pos];
    uint8_t nidl = data[pos + 1];
    if (nidt == 0) break;  // end of list
    if (pos + 4 + nidl > data.size()) {
      return absl::InvalidArgumentError(absl::StrCat("namespace descriptor at ", pos, " overruns the list"));
    }
    const uint8_t* nid = data.data() + pos + 4;
    switch (nidt) {
      case kNidtEui64:
        if (nidl != 8) return absl::InvalidArgumentError("EUI64 descriptor length is not 8");
        std::memcpy(ns.eui64.data(), nid, 8);
        break;
      case kNidtNguid:
        if (nidl != 16) return absl::InvalidArgumentError("NGUID descriptor length is not 16");
        std::memcpy(ns.nguid.data(), nid, 16);
        break;
      case kNidtUuid: {
        if (nidl != 16) return absl::InvalidArgumentError("UUID descriptor length is not 16");
        std::array<uint8_t, 16> bytes;
        std::memcpy(bytes.data(), nid, 16);
        ns.uuid = Uuid(bytes);
        break;
      }
      default:
        break;  // CSI and future types: skip
    }
    pos += 4 + nidl;
  }
  return absl::OkStatus();
}

std::vector<uint32_t> ParseNamespaceList(absl::Span<const uint8_t> data) {
  std::vector<uint32_t> nsids;
  for (size_t pos = 0; pos + 4 <= data.size(); pos += 4) {
    uint32_t nsid = Load32(data.data() + pos);
    if (nsid == 0) break;
    nsids.push_back(nsid);
  }
  return nsids;
}

absl::StatusOr<DiscoveryLog> ParseDiscoveryHeader(absl::Span<const uint8_t> data) {
  if (data.size() < 20) return TooShort("discovery log header", 20, data.size());
  DiscoveryLog log;
  log.genctr = Load64(data.data() + disc_hdr::kGenctr);
  log.numrec = Load64(data.data() + disc_hdr::kNumrec);
  log.recfmt = Load16(data.data() + disc_hdr::kRecfmt);
  return log;
}

absl::StatusOr<DiscoveryLogEntry> ParseDiscoveryEntry(absl::Span<const uint8_t> data) {
  if (data.size() < kDiscoveryEntrySize) return TooShort("discovery log entry", kDiscoveryEntrySize, data.size());
  const uint8_t* p = data.data();
  DiscoveryLogEntry e;
  e.trtype = p[disc_entry::kTrtype];
  e.adrfam = p[disc_entry::kAdrfam];
  e.subtype = p[disc_entry::kSubtype];
  e.treq = p[disc_entry::kTreq];
  e.portid = Load16(p + disc_entry::kPortid);
  e.cntlid = Load16(p + disc_entry::kCntlid);
  e.asqsz = Load16(p + disc_entry::kAsqsz);
  e.eflags = Load16(p + 10);
  e.trsvcid = Text(p + disc_entry::kTrsvcid, 32);
  e.subnqn = Text(p + disc_entry::kSubnqn, 256);
  e.traddr = Text(p + disc_entry::kTraddr, 256);
  e.padding_ok = PaddingOnly(p + disc_entry::kTrsvcid, 32) && PaddingOnly(p + disc_entry::kSubnqn, 256) &&
                 PaddingOnly(p + disc_entry::kTraddr, 256);
  return e;
}

const char* TrtypeName(uint8_t trtype) {
  switch (trtype) {
    case 1: return "RDMA";
    case 2: return "FC";
    case kTrtypeTcp: return "TCP";
    case 254: return "Intra-host";
    default: return "unknown";
  }
}

const char* AdrfamName(uint8_t adrfam) {
  switch (adrfam) {
    case kAdrfamIpv4: return "IPv4";
    case kAdrfamIpv6: return "IPv6";
    case 3: return "InfiniBand";
    case 4: return "FC";
    case 254: return "Intra-host";
    default: return "unknown";
  }
}

const char* SubtypeName(uint8_t subtype) {
  switch (subtype) {
    case kSubtypeDiscoveryReferral: return "Referral to a discovery service";
    case kSubtypeNvm: return "NVM Subsystem";
    case kSubtypeCurrentDiscovery: return "Current Discovery Subsystem";
    default: return "unknown";
  }
}

std::string VersionString(uint32_t ver) {
  uint32_t major = ver >> 16, minor = (ver >> 8) & 0xff, tertiary = ver & 0xff;
  if (tertiary != 0) return absl::StrCat(major, ".", minor, ".", tertiary);
  return absl::StrCat(major, ".", minor);
}

}  // namespace smad::nvme::host
