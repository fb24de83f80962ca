#include "support/smad_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "support/net.h"

namespace smad::testing {

SmadProcess::SmadProcess(std::string dir)
    : dir_(std::move(dir)), state_dir_(dir_ + "/state"), log_(dir_ + "/smad.log") {}

SmadProcess::~SmadProcess() {
  if (pid_ > 0) Stop(SIGKILL);
  pid_t tgt = TgtPid();
  if (tgt > 0) kill(tgt, SIGKILL);
}

std::string SmadProcess::Binary() { return SMAD_BINARY; }

absl::Status SmadProcess::Start(const Options& options) {
  options_ = options;
  if (port_ == 0) {
    uint32_t port = 0;
    if (!absl::SimpleAtoi(FreeTcpPort(), &port)) return absl::InternalError("no free port");
    port_ = static_cast<uint16_t>(port);
  }
  return Restart();
}

absl::Status SmadProcess::Restart() {
  std::string config = dir_ + "/smad.yaml";
  {
    std::ofstream out(config, std::ios::trunc);
    out << options_.config_yaml;
  }
  std::vector<std::string> args = {Binary(), "-c", config, "-a", "127.0.0.1", "-p", std::to_string(port_),
                                   "--state-dir", state_dir_};
  args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    int log = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (log >= 0) {
      dup2(log, STDOUT_FILENO);
      dup2(log, STDERR_FILENO);
    }
    for (const auto& [k, v] : options_.env) setenv(k.c_str(), v.c_str(), 1);
    execv(argv[0], argv.data());
    _exit(127);
  }
  pid_ = pid;
  if (!options_.wait_ready) return absl::OkStatus();
  // Ready = it answers a call. (A channel's connectivity alone can be stale: gRPC shares subchannels
  // between channels, and one may still look connected to the process that was just killed.)
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(absl::StrCat("smad exited during start-up (status ", status, "): ", ReadLog()));
    }
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    auto stub = sma::StorageManagementAgent::NewStub(grpc::CreateCustomChannel(
        absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials(), args));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    sma::GetQosCapabilitiesRequest request;  // device type 0: answered INVALID_ARGUMENT once serving
    sma::GetQosCapabilitiesResponse response;
    grpc::Status answer = stub->GetQosCapabilities(&context, request, &response);
    if (answer.error_code() != grpc::StatusCode::UNAVAILABLE &&
        answer.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError("smad did not start serving within 60 s: " + ReadLog());
}

int SmadProcess::Stop(int sig) {
  if (pid_ <= 0) return -1;
  kill(pid_, sig);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

int SmadProcess::WaitExit(int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

pid_t SmadProcess::TgtPid() const {
  std::ifstream in(state_dir_ + "/smad-tgt.pid");
  std::string text;
  pid_t pid = -1;
  if (in >> text && absl::SimpleAtoi(text, &pid)) return pid;
  return -1;
}

std::string SmadProcess::ReadLog() const {
  std::ifstream in(log_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::unique_ptr<sma::StorageManagementAgent::Stub> SmadProcess::Stub() const {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return sma::StorageManagementAgent::NewStub(
      grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials(), args));
}

}  // namespace smad::testing
