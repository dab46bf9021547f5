#include "store/lease.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

#include <spdlog/spdlog.h>

#include "store/store.hpp"

namespace certfs::store {

namespace {

// The first line of a small file, without its newline; empty when it cannot be read.
std::string first_line(const std::string& path)
{
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
}

struct ProcStat {
    char state = '?';
    std::int64_t start_time = 0;
};

// Fields 3 (state) and 22 (start time) of /proc/<pid>/stat; none when it cannot be read (no
// such process, or one that /proc hides from us: hidepid, ProtectProc). The command name
// (field 2) may hold spaces, parentheses and even a newline: the fields after it start after
// its last ')'.
std::optional<ProcStat> proc_stat(std::int64_t pid)
{
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = text.rfind(')');
    if (close == std::string::npos) {
        return std::nullopt;
    }
    std::istringstream fields(text.substr(close + 1));
    ProcStat out;
    std::string skip;
    fields >> out.state;
    for (int field = 4; field < 22 && fields >> skip; ++field) {
    }
    if (!(fields >> out.start_time)) {
        return std::nullopt;
    }
    return out;
}

// When this boot began (btime in /proc/stat); the earliest time when it cannot be read, so
// that no lease counts as older than this boot.
TimePoint this_boot_began()
{
    static const TimePoint began = [] {
        std::ifstream in("/proc/stat");
        for (std::string line; std::getline(in, line);) {
            if (line.rfind("btime ", 0) == 0) {
                // strtoll, not stoll: a line that does not parse must not throw in the daemon.
                return TimePoint(std::chrono::seconds(std::strtoll(line.c_str() + 6, nullptr, 10)));
            }
        }
        return TimePoint::min();
    }();
    return began;
}

std::string pid_namespace(const std::string& pid)
{
    std::error_code ec;
    auto target = std::filesystem::read_symlink("/proc/" + pid + "/ns/pid", ec);
    return ec ? std::string() : target.string();
}

} // namespace

std::optional<LeaseHolder> holder_of(std::int64_t pid)
{
    // The host's identity does not change while a process runs.
    static const std::string machine_id = [] {
        std::string id = first_line("/etc/machine-id");
        return id.empty() ? first_line("/var/lib/dbus/machine-id") : id;
    }();
    static const std::string boot_id = first_line("/proc/sys/kernel/random/boot_id");
    auto stat = proc_stat(pid);
    if (!stat) {
        return std::nullopt;
    }
    return LeaseHolder{machine_id, boot_id, pid_namespace(std::to_string(pid)), pid, stat->start_time};
}

LeaseHolder this_process()
{
    // Read each time: the pid changes across a fork (the daemon detaches after starting).
    const auto self = holder_of(::getpid());
    return self ? *self : LeaseHolder{};
}

HolderFate holder_fate(const LeaseHolder& holder, TimePoint acquired_at, const LeaseHolder& self)
{
    if (holder.machine_id.empty() || self.machine_id.empty() || holder.machine_id != self.machine_id) {
        return HolderFate::unknown; // another host, or no way to tell
    }
    if (holder.boot_id != self.boot_id) {
        // Taken before this machine booted: every process of that boot is gone. Taken since,
        // under another boot id: another machine with this machine's id (a cloned image that
        // kept /etc/machine-id), whose holder may well run.
        return acquired_at < this_boot_began() ? HolderFate::dead : HolderFate::unknown;
    }
    if (holder.pid_ns != self.pid_ns) {
        return HolderFate::unknown; // another container's pids are not ours to look up
    }
    auto stat = proc_stat(holder.pid);
    if (!stat) {
        // Gone, or hidden from us (/proc mounted hidepid=2, or a unit's ProtectProc): only the
        // kernel's "no such process" says dead; a hidden one may be a live renewal.
        const bool gone = ::kill(static_cast<pid_t>(holder.pid), 0) != 0 && errno == ESRCH;
        return gone ? HolderFate::dead : HolderFate::unknown;
    }
    if (stat->state == 'Z' || stat->state == 'X' || stat->start_time != holder.start_time) {
        return HolderFate::dead; // a zombie, or its pid reused by another process
    }
    return HolderFate::alive;
}

bool lease_holds(const Lease& lease, TimePoint now)
{
    const HolderFate fate = holder_fate(lease.holder, lease.acquired_at);
    return fate == HolderFate::alive || (lease.expires_at > now && fate != HolderFate::dead);
}

std::string why_lease_ended(const Lease& lease, TimePoint now)
{
    return lease.expires_at > now ? ", which no longer runs" : ", whose lease expired";
}

std::string describe_holder(const LeaseHolder& holder)
{
    if (holder.machine_id.empty()) {
        return "an unnamed process";
    }
    const LeaseHolder self = this_process();
    std::string where = holder.machine_id != self.machine_id ? "on host " + holder.machine_id
                        : holder.boot_id != self.boot_id     ? "in another boot of this machine id"
                                                             : "on this host";
    return "pid " + std::to_string(holder.pid) + " " + where;
}

std::string lease_scope(const DomainConfig& domain)
{
    return domain.bundle ? "bundle:" + *domain.bundle : "domain:" + domain.name;
}

Result<LeaseGuard> LeaseGuard::acquire(Store& store, std::string scope, std::string owner, Duration ttl)
{
    TRY(store.acquire_lease(scope, owner, ttl));
    return LeaseGuard(store, std::move(scope), std::move(owner));
}

LeaseGuard::LeaseGuard(Store& store, std::string scope, std::string owner)
    : m_store(&store), m_scope(std::move(scope)), m_owner(std::move(owner))
{
}

LeaseGuard::LeaseGuard(LeaseGuard&& other) noexcept
    : m_store(std::exchange(other.m_store, nullptr)), m_scope(std::move(other.m_scope)),
      m_owner(std::move(other.m_owner))
{
}

LeaseGuard& LeaseGuard::operator=(LeaseGuard&& other) noexcept
{
    if (this != &other) {
        release();
        m_store = std::exchange(other.m_store, nullptr);
        m_scope = std::move(other.m_scope);
        m_owner = std::move(other.m_owner);
    }
    return *this;
}

LeaseGuard::~LeaseGuard() { release(); }

void LeaseGuard::release() noexcept
{
    Store* store = std::exchange(m_store, nullptr);
    if (store == nullptr) {
        return;
    }
    try {
        (void)store->release_lease(m_scope, m_owner);
    } catch (...) {
        // Out of memory while releasing: the lease expires after its ttl instead.
    }
}

LeaseHeartbeat::LeaseHeartbeat(std::string db_path, std::string owner, Duration ttl, Duration every, const Clock* clock)
    : m_db_path(std::move(db_path)), m_owner(std::move(owner)), m_ttl(ttl), m_every(every), m_clock(clock),
      m_thread([this] { loop(); })
{
}

LeaseHeartbeat::~LeaseHeartbeat()
{
    {
        std::lock_guard lock(m_mutex);
        m_stopping = true;
    }
    m_cv.notify_all();
    m_thread.join();
}

void LeaseHeartbeat::loop()
{
    try {
        // Its own connection: the renewals' are busy renewing.
        auto store = Store::open(m_db_path, {.create = false, .actor = m_owner, .clock = m_clock});
        if (!store.ok()) {
            spdlog::warn("no lease heartbeat: {}", store.status().message());
            return;
        }
        std::unique_lock lock(m_mutex);
        while (!m_cv.wait_for(lock, m_every, [this] { return m_stopping; })) {
            lock.unlock();
            if (Status s = (*store)->extend_leases(m_owner, m_ttl); !s.ok()) {
                spdlog::warn("cannot extend the leases of {}: {}", m_owner, s.message());
            }
            lock.lock();
        }
    } catch (...) {
        // The thread's boundary: without a heartbeat the leases expire after their ttl.
        spdlog::warn("lease heartbeat: {}", exception_status("stopped").message());
    }
}

} // namespace certfs::store
