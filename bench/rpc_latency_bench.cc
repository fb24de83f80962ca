// rpc_latency_bench: JSON-RPC round trips against a real smad-tgt process over its Unix socket.
//
// Starts smad-tgt (the build's binary, or $SMAD_TGT_BINARY) with its own socket in a temporary directory,
// creates --bdevs malloc bdevs, then measures on one connection:
//   - --calls sequential spdk_get_version (the smallest request: the fixed cost of a round trip),
//   - --calls sequential bdev_get_bdevs,
//   - --calls sequential nvmf_create_subsystem + nvmf_delete_subsystem pairs (each call and the pair),
//   - bdev_get_bdevs pipelined: --depth requests in flight on one connection, --pipelined-calls in all.
// Times are wall clock from sending a request to having parsed its answer (the client's JSON parsing is
// included; it is measured separately too).
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "bench_support.h"
#include "support/temp_dir.h"
#include "support/tgt_process.h"

namespace smad::bench {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

struct Options {
  int calls = 2000;
  int pipelined_calls = 20000;
  int depth = 16;
  int bdevs = 10;
  int warmup_calls = 200;
  std::string cpumask = "0x1";
  bool busy_poll = false;
};

uint64_t ElapsedNs(Clock::time_point since) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - since).count());
}

// One table row; `total_seconds` 0 leaves the calls/s column empty (rows timed inside a pair).
void PrintRow(const std::string& what, const SampleSummary& s, double total_seconds) {
  std::string rate = total_seconds > 0
                         ? std::to_string(std::lround(static_cast<double>(s.count) / total_seconds))
                         : std::string("-");
  std::printf("%-44s %7zu %9.1f %9.1f %9.1f %9.1f %10s\n", what.c_str(), s.count, s.p50_ns / 1e3,
              s.p99_ns / 1e3, s.mean_ns / 1e3, s.max_ns / 1e3, rate.c_str());
  std::fflush(stdout);
}

// Calls `method` `n` times in sequence; returns per-call latencies, or the first error.
absl::StatusOr<std::vector<uint64_t>> Sequential(jsonrpc::BlockingClient& client, const std::string& method,
                                                 const Json& params, int n, double* seconds) {
  std::vector<uint64_t> samples;
  samples.reserve(n);
  auto begin = Clock::now();
  for (int i = 0; i < n; ++i) {
    auto start = Clock::now();
    auto result = client.Call(method, params);
    samples.push_back(ElapsedNs(start));
    if (!result.ok()) return result.status();
  }
  *seconds = static_cast<double>(ElapsedNs(begin)) / 1e9;
  return samples;
}

int Fail(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "rpc_latency_bench: %s: %s\n", what.c_str(), std::string(status.message()).c_str());
  return 1;
}

int Run(const Options& options) {
  testing::TempDir dir;
  testing::TgtProcess tgt(dir.path(), "bench");
  testing::TgtProcess::Options tgt_options;
  tgt_options.cpumask = options.cpumask;
  tgt_options.extra_args = {"-L", "warn"};
  if (options.busy_poll) tgt_options.extra_args.push_back("--busy-poll");
  if (absl::Status s = tgt.Start(tgt_options); !s.ok()) return Fail("starting smad-tgt", s);

  std::printf(
      "rpc_latency_bench: %s -m %s%s, Unix socket, %d bdevs, %d sequential calls per row, "
      "pipelined %d calls at depth %d\n",
      testing::TgtProcess::Binary().c_str(), options.cpumask.c_str(), options.busy_poll ? " --busy-poll" : "",
      options.bdevs, options.calls, options.pipelined_calls, options.depth);
  std::printf("%s\n", MachineDescription().c_str());

  auto client = tgt.Connect();
  if (!client.ok()) return Fail("connecting", client.status());
  for (int i = 0; i < options.bdevs; ++i) {
    Json params = {{"name", "Malloc" + std::to_string(i)}, {"num_blocks", 2048}, {"block_size", 512}};
    if (auto r = client->Call("bdev_malloc_create", params); !r.ok())
      return Fail("bdev_malloc_create", r.status());
  }
  auto listing = client->Call("bdev_get_bdevs");
  if (!listing.ok()) return Fail("bdev_get_bdevs", listing.status());
  std::string listing_text = listing->dump();
  std::printf("bdev_get_bdevs answer: %zu bdevs, %zu bytes of JSON result\n\n", listing->size(),
              listing_text.size());

  double seconds = 0;
  if (auto w = Sequential(*client, "bdev_get_bdevs", nullptr, options.warmup_calls, &seconds); !w.ok()) {
    return Fail("warm-up", w.status());
  }

  std::printf("%-44s %7s %9s %9s %9s %9s %10s\n", "request (one connection)", "calls", "p50 us", "p99 us",
              "mean us", "max us", "calls/s");
  auto version = Sequential(*client, "spdk_get_version", nullptr, options.calls, &seconds);
  if (!version.ok()) return Fail("spdk_get_version", version.status());
  PrintRow("spdk_get_version (sequential)", Summarize(*version), seconds);

  auto get_bdevs = Sequential(*client, "bdev_get_bdevs", nullptr, options.calls, &seconds);
  if (!get_bdevs.ok()) return Fail("bdev_get_bdevs", get_bdevs.status());
  PrintRow("bdev_get_bdevs (sequential)", Summarize(*get_bdevs), seconds);

  // nvmf_create_subsystem + nvmf_delete_subsystem pairs.
  {
    std::vector<uint64_t> create, remove, pair;
    auto begin = Clock::now();
    for (int i = 0; i < options.calls; ++i) {
      std::string nqn = "nqn.2016-06.io.spdk:bench" + std::to_string(i);
      auto start = Clock::now();
      auto c = client->Call("nvmf_create_subsystem", {{"nqn", nqn}, {"allow_any_host", true}});
      create.push_back(ElapsedNs(start));
      if (!c.ok()) return Fail("nvmf_create_subsystem", c.status());
      auto mid = Clock::now();
      auto d = client->Call("nvmf_delete_subsystem", {{"nqn", nqn}});
      remove.push_back(ElapsedNs(mid));
      pair.push_back(ElapsedNs(start));
      if (!d.ok()) return Fail("nvmf_delete_subsystem", d.status());
    }
    seconds = static_cast<double>(ElapsedNs(begin)) / 1e9;
    PrintRow("nvmf_create_subsystem (in create+delete)", Summarize(create), 0);
    PrintRow("nvmf_delete_subsystem (in create+delete)", Summarize(remove), 0);
    PrintRow("create+delete pair (pairs/s)", Summarize(pair), seconds);
  }

  // Pipelined bdev_get_bdevs: keep `depth` requests in flight; answers come back in request order.
  {
    std::vector<uint64_t> latencies;
    latencies.reserve(options.pipelined_calls);
    std::deque<Clock::time_point> sent;
    int next_id = 1000000;
    int issued = 0;
    auto send_one = [&]() -> absl::Status {
      std::string request =
          absl::StrCat(R"({"jsonrpc":"2.0","id":)", next_id++, R"(,"method":"bdev_get_bdevs"})");
      sent.push_back(Clock::now());
      ++issued;
      return client->SendRaw(request);
    };
    auto begin = Clock::now();
    while (issued < options.pipelined_calls && issued < options.depth) {
      if (absl::Status s = send_one(); !s.ok()) return Fail("pipelined send", s);
    }
    while (!sent.empty()) {
      auto answer = client->ReadValue();
      if (!answer.ok()) return Fail("pipelined read", answer.status());
      if (!answer->contains("result")) return Fail("pipelined answer", absl::InternalError(answer->dump()));
      latencies.push_back(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - sent.front()).count()));
      sent.pop_front();
      if (issued < options.pipelined_calls) {
        if (absl::Status s = send_one(); !s.ok()) return Fail("pipelined send", s);
      }
    }
    seconds = static_cast<double>(ElapsedNs(begin)) / 1e9;
    PrintRow("bdev_get_bdevs (pipelined, depth " + std::to_string(options.depth) + ")", Summarize(latencies),
             seconds);
  }

  // The client's share: parsing one bdev_get_bdevs answer with nlohmann::json.
  {
    std::string answer = absl::StrCat(R"({"jsonrpc":"2.0","id":1,"result":)", listing_text, "}");
    std::vector<uint64_t> parse;
    for (int i = 0; i < 1000; ++i) {
      auto start = Clock::now();
      Json parsed = Json::parse(answer);
      parse.push_back(ElapsedNs(start));
      if (parsed.is_discarded()) return 1;
    }
    PrintRow("(client only) parse one bdev_get_bdevs answer", Summarize(parse), 0);
  }

  int status = tgt.Stop(SIGTERM);
  std::printf("\nload average at end: %s\n", LoadAverage().c_str());
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "rpc_latency_bench: smad-tgt did not exit cleanly (status %d)\n", status);
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace smad::bench

int main(int argc, char** argv) {
  smad::bench::Options options;
  CLI::App app{"rpc_latency_bench: JSON-RPC round trips against a real smad-tgt"};
  app.add_option("-n,--calls", options.calls, "sequential calls per row")->capture_default_str();
  app.add_option("--pipelined-calls", options.pipelined_calls, "calls of the pipelined row")
      ->capture_default_str();
  app.add_option("--depth", options.depth, "requests in flight in the pipelined row")->capture_default_str();
  app.add_option("--bdevs", options.bdevs, "malloc bdevs that exist during the run")->capture_default_str();
  app.add_option("--warmup-calls", options.warmup_calls, "bdev_get_bdevs calls before measuring")
      ->capture_default_str();
  app.add_option("-m,--cpumask", options.cpumask, "smad-tgt reactor mask")->capture_default_str();
  app.add_flag("--busy-poll", options.busy_poll, "start smad-tgt with --busy-poll");
  CLI11_PARSE(app, argc, argv);
  if (options.calls <= 0 || options.pipelined_calls <= 0 || options.depth <= 0) {
    std::fprintf(stderr, "rpc_latency_bench: counts must be positive\n");
    return 2;
  }
  return smad::bench::Run(options);
}
