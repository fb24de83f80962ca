#include "agent/target/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/status.h"
#include "jsonrpc/blocking_client.h"
#include "spdlog/spdlog.h"

namespace smad::agent {
namespace {

int PidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

bool Alive(pid_t pid) { return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM); }

// Whether `pid` runs an executable whose name is the target binary's (guards against a recycled pid).
bool RunsBinary(pid_t pid, const std::string& binary) {
  char exe[4096];
  ssize_t n = readlink(absl::StrCat("/proc/", pid, "/exe").c_str(), exe, sizeof(exe) - 1);
  if (n <= 0) return false;
  exe[n] = '\0';
  std::string running = absl::StripSuffix(std::string(exe), " (deleted)").data();
  char want[4096];
  const char* resolved = realpath(binary.c_str(), want);
  return resolved != nullptr && running == resolved;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TargetSupervisor>> TargetSupervisor::Start(Options options) {
  if (access(options.binary.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("target binary ", options.binary, ": ", ErrnoString(errno)));
  }
  std::unique_ptr<TargetSupervisor> s(new TargetSupervisor(std::move(options)));
  s->wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s->wake_fd_ < 0) return ErrnoStatus(errno, "eventfd");
  if (s->TryAdopt()) {
    s->adopted_ = true;
  } else {
    RETURN_IF_ERROR(s->Launch());
    pid_t pid = s->pid();
    absl::Status ready = s->WaitReady(pid);
    if (!ready.ok()) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      return ready;
    }
  }
  s->watcher_ = std::thread([p = s.get()] { p->WatchLoop(); });
  return s;
}

TargetSupervisor::~TargetSupervisor() {
  Stop();
  if (wake_fd_ >= 0) close(wake_fd_);
}

pid_t TargetSupervisor::pid() const {
  absl::MutexLock lock(&mu_);
  return pid_;
}

bool TargetSupervisor::TryAdopt() {
  std::ifstream in(options_.pid_file);
  std::string text;
  pid_t pid = 0;
  if (!(in >> text) || !absl::SimpleAtoi(text, &pid) || !Alive(pid) || !RunsBinary(pid, options_.binary)) {
    return false;
  }
  auto client = jsonrpc::BlockingClient::Connect(options_.socket);
  if (!client.ok() || !client->Call("spdk_get_version", jsonrpc::Json(), std::chrono::seconds(5)).ok()) return false;
  absl::MutexLock lock(&mu_);
  pid_ = pid;
  pidfd_ = PidfdOpen(pid);
  spdlog::info("target: adopted the running smad-tgt (pid {}) on {}", pid, options_.socket);
  return true;
}

absl::Status TargetSupervisor::Launch() {
  std::vector<std::string> argv = {options_.binary, "-r", options_.socket};
  if (!options_.cpumask.empty()) argv.insert(argv.end(), {"-m", options_.cpumask});
  if (!options_.config_file.empty()) argv.insert(argv.end(), {"-c", options_.config_file});
  argv.insert(argv.end(), options_.args.begin(), options_.args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);

  int log = open(options_.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (log < 0) return ErrnoStatus(errno, absl::StrCat("target log ", options_.log_file));
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(log);
    return ErrnoStatus(err, "fork");
  }
  if (pid == 0) {
    // Child: its own session (a Ctrl-C meant for smad does not reach it; smad stops it itself), output
    // to the log, and nothing else inherited.
    setsid();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    dup2(log, STDOUT_FILENO);
    dup2(log, STDERR_FILENO);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  close(log);
  {
    absl::MutexLock lock(&mu_);
    pid_ = pid;
    if (pidfd_ >= 0) close(pidfd_);
    pidfd_ = PidfdOpen(pid);
  }
  std::string tmp = options_.pid_file + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << pid << "\n";
  }
  if (rename(tmp.c_str(), options_.pid_file.c_str()) != 0) {
    spdlog::warn("target: cannot write {}: {}", options_.pid_file, ErrnoString(errno));
  }
  spdlog::info("target: started smad-tgt (pid {}) on {}", pid, options_.socket);
  return absl::OkStatus();
}

absl::Status TargetSupervisor::WaitReady(pid_t pid) {
  auto deadline = std::chrono::steady_clock::now() + options_.startup_timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int wstatus;
    if (waitpid(pid, &wstatus, WNOHANG) == pid) {
      return absl::InternalError(absl::StrCat("smad-tgt exited during start-up (status ", wstatus,
                                              "); see ", options_.log_file));
    }
    auto client = jsonrpc::BlockingClient::Connect(options_.socket);
    if (client.ok() && client->Call("framework_wait_init", jsonrpc::Json(), std::chrono::seconds(5)).ok()) {
      return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat("smad-tgt did not answer on ", options_.socket, " within ",
                                                  options_.startup_timeout.count(), " ms"));
}

void TargetSupervisor::WatchLoop() {
  auto backoff = options_.restart_min;
  for (;;) {
    pid_t pid;
    int pidfd;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      pid = pid_;
      pidfd = pidfd_;
    }
    // Wait for the target to exit (or for Stop).
    for (;;) {
      struct pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {pidfd, POLLIN, 0}};
      int n = poll(fds, pidfd >= 0 ? 2 : 1, pidfd >= 0 ? -1 : 200);
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) return;
      }
      if (n > 0 && pidfd >= 0 && (fds[1].revents & POLLIN)) break;
      if (pidfd < 0 && !Alive(pid)) break;
    }
    int wstatus = 0;
    waitpid(pid, &wstatus, WNOHANG);  // reaps a child; harmless for an adopted process
    spdlog::error("target: smad-tgt (pid {}) exited (status {}); restarting in {} ms", pid, wstatus, backoff.count());
    uint64_t eventfd_value;
    struct pollfd wake = {wake_fd_, POLLIN, 0};
    if (poll(&wake, 1, static_cast<int>(backoff.count())) > 0) {
      if (read(wake_fd_, &eventfd_value, sizeof(eventfd_value)) < 0) {}
      return;
    }
    absl::Status launched = Launch();
    absl::Status ready = launched.ok() ? WaitReady(this->pid()) : launched;
    if (!ready.ok()) {
      spdlog::error("target: restart failed: {}", ready.ToString());
      backoff = std::min(backoff * 2, options_.restart_max);
      continue;
    }
    restarts_++;
    backoff = options_.restart_min;
    if (options_.on_restart) options_.on_restart();
  }
}

void TargetSupervisor::KillForRestart() {
  pid_t pid = this->pid();
  if (pid > 0) {
    spdlog::warn("target: killing unresponsive smad-tgt (pid {})", pid);
    kill(pid, SIGKILL);
  }
}

void TargetSupervisor::Stop() {
  pid_t pid;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    pid = pid_;
  }
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof(one)) < 0) {}
  if (watcher_.joinable()) watcher_.join();
  if (pid > 0 && Alive(pid)) {
    kill(pid, SIGTERM);
    for (int i = 0; i < 1000 && Alive(pid); ++i) {
      if (waitpid(pid, nullptr, WNOHANG) == pid) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (Alive(pid)) {
      spdlog::warn("target: smad-tgt (pid {}) ignored SIGTERM; killing it", pid);
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
  unlink(options_.pid_file.c_str());
  absl::MutexLock lock(&mu_);
  if (pidfd_ >= 0) close(pidfd_);
  pidfd_ = -1;
  pid_ = -1;
}

}  // namespace smad::agent
