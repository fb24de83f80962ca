#include "reactor/reactor.h"

#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace smad {
namespace {

thread_local Reactor* g_current_reactor = nullptr;

constexpr int kMaxEvents = 64;

}  // namespace

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

Reactor* Reactor::Current() { return g_current_reactor; }

Reactor::Reactor(Options options) : options_(std::move(options)) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd_ < 0 || event_fd_ < 0) {
    spdlog::critical("reactor {}: cannot create epoll/eventfd: {}", options_.name, ErrnoString(errno));
    std::abort();
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // nullptr marks the wake-up eventfd
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, event_fd_, &ev) != 0) std::abort();
}

Reactor::~Reactor() {
  // Drop queued tasks without running them; their captured state is destroyed here.
  while (auto* node = posted_.Pop()) delete node;
  if (event_fd_ >= 0) close(event_fd_);
  if (epoll_fd_ >= 0) close(epoll_fd_);
}

void Reactor::Start() {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), options_.name.substr(0, 15).c_str());
    if (options_.core >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(options_.core, &set);
      if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0) {
        spdlog::warn("reactor {}: cannot pin to core {}", options_.name, options_.core);
      }
    }
    Run();
  });
}

void Reactor::Run() {
  g_current_reactor = this;
  Loop();
  g_current_reactor = nullptr;
}

void Reactor::Stop() {
  stop_.store(true, std::memory_order_seq_cst);
  Wake();
}

void Reactor::Join() {
  if (thread_.joinable()) thread_.join();
}

void Reactor::Wake() {
  uint64_t one = 1;
  ssize_t rc = write(event_fd_, &one, sizeof(one));
  (void)rc;  // EAGAIN means the counter is already non-zero: the reactor is awake anyway.
}

void Reactor::Post(Task task) {
  posted_.Push(new MpscQueue<Task>::Node(std::move(task)));
  // Pairs with the fence in Loop(): either the loop sees the node before sleeping, or we see that it
  // sleeps and wake it. Push publishes the node with a release store, which may otherwise be reordered
  // after the load below (even on x86), and the loop would then sleep on a non-empty queue, unwoken.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (sleeping_.load(std::memory_order_seq_cst)) Wake();
}

void Reactor::Defer(Task task) { deferred_.push_back(std::move(task)); }

uint64_t Reactor::RunAfter(uint64_t delay_ns, Task task) {
  uint64_t id = next_timer_id_++;
  Timer timer;
  timer.once = std::move(task);
  timers_.emplace(id, std::move(timer));
  timer_heap_.push({NowNs() + delay_ns, id});
  return id;
}

uint64_t Reactor::RunEvery(uint64_t period_ns, absl::AnyInvocable<void()> fn) {
  uint64_t id = next_timer_id_++;
  Timer timer;
  timer.period_ns = period_ns == 0 ? 1 : period_ns;
  timer.repeat = std::move(fn);
  timers_.emplace(id, std::move(timer));
  timer_heap_.push({NowNs() + timer.period_ns, id});
  return id;
}

void Reactor::CancelTimer(uint64_t id) { timers_.erase(id); }

absl::Status Reactor::WatchFd(int fd, uint32_t events, FdCallback callback) {
  auto watch = std::make_unique<FdWatch>(FdWatch{fd, std::move(callback)});
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = watch.get();
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    return ErrnoStatus(errno, "epoll_ctl(ADD) failed: " + ErrnoString(errno));
  }
  watches_[fd] = std::move(watch);
  return absl::OkStatus();
}

absl::Status Reactor::ModifyFd(int fd, uint32_t events) {
  auto it = watches_.find(fd);
  if (it == watches_.end()) return ErrnoStatus(ENOENT, "fd is not watched");
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = it->second.get();
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev) != 0) {
    return ErrnoStatus(errno, "epoll_ctl(MOD) failed: " + ErrnoString(errno));
  }
  return absl::OkStatus();
}

void Reactor::UnwatchFd(int fd) {
  auto it = watches_.find(fd);
  if (it == watches_.end()) return;
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  // The watch may be in the event batch being dispatched: keep it alive until the batch ends, with a
  // cleared callback so it is not invoked again.
  it->second->fd = -1;
  retired_watches_.push_back(std::move(it->second));
  watches_.erase(it);
}

uint64_t Reactor::AddPoller(Poller poller) {
  uint64_t id = next_poller_id_++;
  pollers_.emplace_back(id, std::move(poller));
  return id;
}

void Reactor::RemovePoller(uint64_t id) {
  for (auto& entry : pollers_) {
    if (entry.first == id) entry.second = nullptr;  // compacted in RunPollers
  }
}

bool Reactor::RunPosted() {
  bool ran = false;
  // Bound the batch so a flood of posts cannot starve fds and timers.
  for (int i = 0; i < 1024; ++i) {
    auto* node = posted_.Pop();
    if (node == nullptr) break;
    Task task = std::move(node->value);
    delete node;
    std::move(task)();
    ran = true;
  }
  return ran;
}

bool Reactor::RunDeferred() {
  if (deferred_.empty()) return false;
  deferred_running_.swap(deferred_);
  for (auto& task : deferred_running_) std::move(task)();
  deferred_running_.clear();
  return true;
}

bool Reactor::RunTimers() {
  if (timer_heap_.empty()) return false;
  uint64_t now = NowNs();
  bool ran = false;
  while (!timer_heap_.empty() && timer_heap_.top().deadline <= now) {
    TimerEntry entry = timer_heap_.top();
    timer_heap_.pop();
    auto it = timers_.find(entry.id);
    if (it == timers_.end()) continue;  // cancelled
    ran = true;
    if (it->second.period_ns == 0) {
      Task task = std::move(it->second.once);
      timers_.erase(it);
      std::move(task)();
    } else {
      uint64_t period = it->second.period_ns;
      timer_heap_.push({now + period, entry.id});
      // Run a moved-out copy: the callback may cancel its own timer (erasing the map entry).
      absl::AnyInvocable<void()> fn = std::move(it->second.repeat);
      fn();
      auto again = timers_.find(entry.id);
      if (again != timers_.end()) again->second.repeat = std::move(fn);
    }
  }
  return ran;
}

bool Reactor::RunPollers() {
  bool busy = false;
  bool compact = false;
  for (size_t i = 0; i < pollers_.size(); ++i) {
    if (!pollers_[i].second) {
      compact = true;
      continue;
    }
    busy |= pollers_[i].second();
  }
  if (compact) {
    std::erase_if(pollers_, [](const auto& entry) { return !entry.second; });
  }
  return busy;
}

int Reactor::NextTimeoutMs() const {
  if (timer_heap_.empty()) return -1;
  uint64_t now = NowNs();
  uint64_t deadline = timer_heap_.top().deadline;
  if (deadline <= now) return 0;
  uint64_t ms = (deadline - now + 999999) / 1000000;
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

void Reactor::Loop() {
  epoll_event events[kMaxEvents];
  while (true) {
    ++iterations_;
    bool busy = RunPosted();
    busy |= RunTimers();
    busy |= RunPollers();
    busy |= RunDeferred();
    if (stop_.load(std::memory_order_acquire) && posted_.MaybeEmpty() && deferred_.empty()) break;

    int timeout = 0;
    if (!busy && !options_.busy_poll) {
      sleeping_.store(true, std::memory_order_seq_cst);
      std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with the fence in Post()
      if (posted_.MaybeEmpty() && deferred_.empty() && !stop_.load(std::memory_order_seq_cst)) {
        timeout = NextTimeoutMs();
      }
    }
    int n = epoll_wait(epoll_fd_, events, kMaxEvents, timeout);
    sleeping_.store(false, std::memory_order_relaxed);
    for (int i = 0; i < n; ++i) {
      auto* watch = static_cast<FdWatch*>(events[i].data.ptr);
      if (watch == nullptr) {
        uint64_t value;
        while (read(event_fd_, &value, sizeof(value)) > 0) {
        }
        continue;
      }
      if (watch->fd >= 0 && watch->callback) watch->callback(events[i].events);
    }
    retired_watches_.clear();
  }
}

absl::StatusOr<std::vector<int>> ParseCpuMask(const std::string& mask) {
  std::vector<int> cores;
  absl::string_view text = mask;
  if (absl::ConsumePrefix(&text, "[")) {
    if (!absl::ConsumeSuffix(&text, "]")) return absl::InvalidArgumentError("CPU list must end with ']'");
    for (absl::string_view part : absl::StrSplit(text, ',')) {
      std::pair<absl::string_view, absl::string_view> range = absl::StrSplit(part, absl::MaxSplits('-', 1));
      int lo, hi;
      if (!absl::SimpleAtoi(range.first, &lo)) return absl::InvalidArgumentError("invalid CPU number");
      hi = lo;
      if (!range.second.empty() && !absl::SimpleAtoi(range.second, &hi)) {
        return absl::InvalidArgumentError("invalid CPU range");
      }
      if (lo < 0 || hi < lo || hi >= CPU_SETSIZE) return absl::InvalidArgumentError("CPU out of range");
      for (int c = lo; c <= hi; ++c) cores.push_back(c);
    }
  } else {
    absl::ConsumePrefix(&text, "0x") || absl::ConsumePrefix(&text, "0X");
    if (text.empty() || text.size() > 16) return absl::InvalidArgumentError("invalid CPU mask");
    uint64_t bits = 0;
    for (char c : text) {
      int v;
      if (c >= '0' && c <= '9') v = c - '0';
      else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
      else return absl::InvalidArgumentError("invalid hex digit in CPU mask");
      bits = bits << 4 | static_cast<uint64_t>(v);
    }
    for (int c = 0; c < 64; ++c) {
      if (bits >> c & 1) cores.push_back(c);
    }
  }
  if (cores.empty()) return absl::InvalidArgumentError("CPU mask selects no core");
  std::sort(cores.begin(), cores.end());
  cores.erase(std::unique(cores.begin(), cores.end()), cores.end());
  return cores;
}

ReactorSet::ReactorSet(const std::vector<int>& cores, bool busy_poll) {
  int index = 0;
  for (int core : cores) {
    Reactor::Options options;
    options.name = "reactor_" + std::to_string(core);
    options.index = index++;
    options.core = core;
    options.busy_poll = busy_poll;
    reactors_.push_back(std::make_unique<Reactor>(std::move(options)));
  }
}

ReactorSet::~ReactorSet() { Stop(); }

void ReactorSet::Start() {
  for (auto& r : reactors_) r->Start();
  started_ = true;
}

void ReactorSet::Stop() {
  if (!started_) return;
  for (auto& r : reactors_) r->Stop();
  for (auto& r : reactors_) r->Join();
  started_ = false;
}

}  // namespace smad
