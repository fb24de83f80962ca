// Fuzzes the target side of NVMe/TCP: the input is the byte stream a host sends on one connection
// (ICReq, capsules, H2CData, ...), delivered over loopback TCP to an in-process target with one data
// reactor, a 1 MiB malloc namespace in nqn.2016-06.io.spdk:remote0 (any host) and an empty
// nqn.2016-06.io.spdk:restricted (no host allowed) — the names of the reference captures, so seeds taken
// from them reach deep states. Every input ends with the connection closed by the fuzzer; the target
// must answer or terminate without crashing, leaking or hanging.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <future>
#include <string>

#include "nlohmann/json.hpp"
#include "reactor/reactor.h"
#include "spdlog/spdlog.h"
#include "support/net.h"
#include "tgt/app/target_core.h"

namespace {

using Json = nlohmann::json;

struct Environment {
  smad::Reactor control{smad::Reactor::Options{.name = "fuzz_ctrl"}};
  std::unique_ptr<smad::tgt::TargetCore> core;
  uint16_t port = 0;

  Environment() {
    spdlog::set_level(spdlog::level::off);
    core = std::make_unique<smad::tgt::TargetCore>(control, std::vector<int>{0}, false, [] {});
    core->Start();
    control.Start();
    port = static_cast<uint16_t>(std::stoi(smad::testing::FreeTcpPort()));
    Json listen = {{"trtype", "tcp"}, {"traddr", "127.0.0.1"}, {"trsvcid", std::to_string(port)}};
    for (const auto& entry : std::vector<std::pair<std::string, Json>>{
             {"nvmf_create_transport", {{"trtype", "TCP"}}},
             {"bdev_malloc_create", {{"name", "M0"}, {"num_blocks", 2048}, {"block_size", 512}}},
             {"nvmf_create_subsystem", {{"nqn", "nqn.2016-06.io.spdk:remote0"}, {"allow_any_host", true}}},
             {"nvmf_subsystem_add_ns", {{"nqn", "nqn.2016-06.io.spdk:remote0"}, {"namespace", {{"bdev_name", "M0"}}}}},
             {"nvmf_subsystem_add_listener", {{"nqn", "nqn.2016-06.io.spdk:remote0"}, {"listen_address", listen}}},
             {"nvmf_create_subsystem", {{"nqn", "nqn.2016-06.io.spdk:restricted"}}},
             {"nvmf_subsystem_add_listener", {{"nqn", "nqn.2016-06.io.spdk:restricted"}, {"listen_address", listen}}},
         }) {
      const std::string& method = entry.first;
      const Json& params = entry.second;
      std::promise<Json> answer;
      control.Post([&] { core->dispatcher().Call(method, params, [&](const Json& r) { answer.set_value(r); }); });
      Json r = answer.get_future().get();
      if (r.contains("error")) {
        fprintf(stderr, "fuzzer set-up failed: %s %s\n", method.c_str(), r.dump().c_str());
        abort();
      }
    }
  }
};

Environment& Env() {
  static Environment* env = new Environment();  // leaked: reactors run until exit
  return *env;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Environment& env = Env();
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(env.port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) abort();
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  // Send PDU by PDU (as plen announces them; whatever does not parse goes in one piece), giving the
  // target a moment to answer each, as a host waiting for completions would; drain answers meanwhile.
  char sink[65536];
  size_t sent = 0;
  bool open = true;
  while (open && sent < size) {
    size_t chunk = size - sent;
    if (chunk >= 8) {
      uint32_t plen = static_cast<uint32_t>(data[sent + 4]) | static_cast<uint32_t>(data[sent + 5]) << 8 |
                      static_cast<uint32_t>(data[sent + 6]) << 16 | static_cast<uint32_t>(data[sent + 7]) << 24;
      if (plen >= 8 && plen <= chunk) chunk = plen;
    }
    size_t end = sent + chunk;
    while (open && sent < end) {
      pollfd p{fd, POLLIN | POLLOUT, 0};
      if (poll(&p, 1, 2000) <= 0) abort();  // the target neither reads nor writes: a hang
      if ((p.revents & POLLIN) && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) == 0) open = false;
      if (p.revents & POLLOUT) {
        ssize_t n = send(fd, data + sent, end - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN) open = false;
        if (n > 0) sent += static_cast<size_t>(n);
      }
      if (p.revents & (POLLERR | POLLHUP)) open = false;
    }
    pollfd p{fd, POLLIN, 0};
    while (open && poll(&p, 1, 1) > 0) {
      if (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) <= 0) open = false;
    }
  }
  shutdown(fd, SHUT_WR);
  // The target closes its side once it read our end of stream; wait for that.
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0) abort();  // no close within 5 s: the target hangs on this input
    ssize_t n = recv(fd, sink, sizeof(sink), 0);
    if (n <= 0) break;
  }
  close(fd);
  return 0;
}
