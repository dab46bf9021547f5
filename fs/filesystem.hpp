// The certfs filesystem: the store seen through libfuse's low-level API.
//
//   /live/<name>/{cert,chain,fullchain,privkey,combined}.pem   the current generation
//   /archive/<name>/<gen>/{...same five files...}              every generation, immutable
//
// One inode per (domain, generation, file), never reused within a mount, so an open file
// descriptor reads one generation for its whole life and the page cache can be kept. The
// directory live/<name> is one inode per generation too: a lookup of <name> names one
// generation's directory, whose file entries never change, so everything opened through one
// directory descriptor (or below one working directory) comes from one generation, and the
// kernel may cache the file entries for good. Only the entry <name> in live/ changes: which
// generation a lookup of it returns is decided by DomainPins (pins.hpp). A watcher thread
// follows the store (PRAGMA data_version), starts transitions and drops the kernel's entries;
// request handlers never call notify functions (that can deadlock).
//
// Thread-safety: handlers run on libfuse's worker threads; all shared state is guarded as
// written beside it. Lock order: m_store_mutex before m_mutex; never the reverse.
#pragma once

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fs/pins.hpp"
#include "store/store.hpp"

namespace certfs::fs {

inline constexpr std::array<const char*, 5> k_file_names = {"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem",
                                                             "combined.pem"};
inline constexpr Duration k_default_pin_window = std::chrono::seconds(2);
// A commit drops the kernel's entry for live/<name> at once and again this much later (at most a
// quarter of the window), and flips one window after the second drop (see refresh()).
inline constexpr PinDuration k_max_redrop_delay = std::chrono::milliseconds(100);

// Readers held on an older generation since the mount (pins.hpp): what the metrics show.
struct HoldCounts {
    std::uint64_t held = 0;           // processes held for a window or longer
    std::uint64_t moved_at_bound = 0; // of those, moved at the bound rather than at a pause
};

struct Options {
    std::string db_path;
    Duration pin_window = k_default_pin_window;
    Duration max_hold = k_default_max_hold; // the bound on a hold (pins.hpp)
    Duration poll_interval = std::chrono::milliseconds(100); // how often the watcher looks
    std::function<void()> on_store_change; // called by the watcher after it saw a change
};

class Filesystem {
public:
    // Opens the store (which must exist) and loads the domains.
    static Result<std::unique_ptr<Filesystem>> create(const Options& options);
    ~Filesystem();
    Filesystem(const Filesystem&) = delete;
    Filesystem& operator=(const Filesystem&) = delete;

    static const fuse_lowlevel_ops& operations();

    // Opens the store and starts the watcher thread for session se; stop() ends it. The session
    // outlives both. An error means the store could not be opened: nothing was started.
    Status start(fuse_session* se);
    void stop();

    HoldCounts hold_counts() const;

    // Handlers, called by the thin op_* functions in filesystem.cpp. Each replies exactly once.
    void init(fuse_conn_info* conn);
    void lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
    void forget(fuse_ino_t ino, std::uint64_t nlookup);
    void getattr(fuse_req_t req, fuse_ino_t ino);
    void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
    void read(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off);
    void readdir(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off);

private:
    enum class Kind { root, live, archive, live_domain, archive_domain, archive_gen, file };

    struct Content {
        std::array<std::shared_ptr<const std::string>, 5> files;
        TimePoint created_at;
    };

    struct Node {
        Kind kind = Kind::root;
        std::string domain;
        std::int64_t domain_id = 0;
        std::int64_t gen = 0;
        int file = -1;
        std::uint64_t nlookup = 0;
        std::shared_ptr<const Content> content; // files only
        std::uint32_t uid = 0, gid = 0, mode = 0;
    };

    struct DomainView {
        std::int64_t id = 0;
        std::optional<std::int64_t> current;
        std::optional<TimePoint> current_not_after;
        std::vector<std::pair<std::int64_t, TimePoint>> generations;
        std::uint32_t uid = 0, gid = 0, mode = 0600;
        std::unique_ptr<DomainPins> pins; // set while in transition
        std::optional<PinTime> redrop;     // when the second drop of a commit is due
    };

    // What a lookup answers: an inode and whether the kernel may cache the entry.
    struct Entry {
        fuse_ino_t ino = 0;
        bool cacheable = true;
    };

    Filesystem(Options options, std::unique_ptr<store::Store> store);

    Status refresh(); // re-reads the domains; called by the watcher
    void run_timers();          // due second drops; called by the watcher
    PinTime next_timer() const; // the next due second drop
    PinDuration redrop_delay() const;
    // Drops the kernel's entry for live/<name>; watcher only.
    void drop_entry(fuse_session* session, fuse_ino_t parent, const std::string& name);
    // Logs what a choice of the pins reports about a process (resolve(), no lock held).
    void report(const std::string& domain, std::uint32_t pid, const DomainPins::Choice& choice);
    void watch();     // the watcher thread's loop
    Result<std::shared_ptr<const Content>> load_content(const std::string& domain, std::int64_t gen);

    Result<Entry> resolve(fuse_req_t req, fuse_ino_t parent, const char* name);
    Result<Entry> file_entry(const std::string& domain, std::int64_t domain_id, std::int64_t gen, int file);
    fuse_ino_t inode_for(Kind kind, const std::string& domain, std::int64_t domain_id, std::int64_t gen, int file);
    struct stat attributes(fuse_ino_t ino, const Node& node) const;
    std::uint32_t process_of(std::uint32_t tid);

    const Options m_options;
    const TimePoint m_mounted_at;
    fuse_session* m_session = nullptr;
    std::atomic<bool> m_no_open{false}; // kernel supports opens without a round trip; set in init

    std::mutex m_store_mutex;
    std::unique_ptr<store::Store> m_store; // guarded by m_store_mutex
    std::int64_t m_data_version = -1;      // guarded by m_store_mutex

    mutable std::mutex m_mutex;
    std::map<std::string, DomainView> m_domains; // guarded by m_mutex
    std::map<std::tuple<int, std::int64_t, std::int64_t, int>, fuse_ino_t> m_inode_of; // guarded by m_mutex
    std::map<fuse_ino_t, Node> m_nodes;                                                  // guarded by m_mutex
    fuse_ino_t m_next_ino = 4;                                                           // guarded by m_mutex
    std::map<std::pair<std::int64_t, std::int64_t>, std::shared_ptr<const Content>> m_content; // guarded by m_mutex
    std::map<std::uint32_t, std::uint32_t> m_tgid_of; // tid -> pid; guarded by m_mutex
    HoldCounts m_holds;                               // guarded by m_mutex

    std::mutex m_watch_mutex;
    std::condition_variable m_watch_cv;
    bool m_stopping = false; // guarded by m_watch_mutex
    std::thread m_watcher;
};

} // namespace certfs::fs
