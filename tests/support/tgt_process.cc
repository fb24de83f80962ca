#include "support/tgt_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

namespace smad::testing {

std::string TgtProcess::Binary() {
  if (const char* env = getenv("SMAD_TGT_BINARY")) return env;
  return SMAD_TGT_BINARY;
}

TgtProcess::TgtProcess(std::string dir, std::string name)
    : dir_(std::move(dir)), socket_(dir_ + "/" + name + ".sock"), log_(dir_ + "/" + name + ".log") {}

TgtProcess::~TgtProcess() {
  if (pid_ > 0) Stop(SIGKILL);
}

absl::Status TgtProcess::Start(const Options& options) {
  std::vector<std::string> args = {Binary(), "-r", socket_, "-m", options.cpumask};
  if (!options.config_file.empty()) {
    args.push_back("-c");
    args.push_back(options.config_file);
  }
  for (const auto& a : options.extra_args) args.push_back(a);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  pid_ = pid;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError("smad-tgt exited during start-up: " + ReadLog());
    }
    auto client = jsonrpc::BlockingClient::Connect(socket_);
    if (client.ok() && client->Call("spdk_get_version", nullptr, std::chrono::seconds(2)).ok()) {
      return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return absl::DeadlineExceededError("smad-tgt did not become ready: " + ReadLog());
}

int TgtProcess::Stop(int sig) {
  if (pid_ <= 0) return -1;
  kill(pid_, sig);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

std::string TgtProcess::ReadLog() const {
  std::ifstream in(log_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<jsonrpc::BlockingClient> TgtProcess::Connect() const {
  return jsonrpc::BlockingClient::Connect(socket_);
}

}  // namespace smad::testing
