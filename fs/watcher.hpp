// The watcher: the thread that follows the store's generations into a Filesystem's tree.
//
// Every poll_interval it asks the store whether anything changed (PRAGMA data_version); when it
// did, it re-reads the domains into Filesystem::m_domains and, for each commit it sees, starts
// or extends the domain's transition (DomainPins: the joins and the flips, pins.hpp), retires
// the old generation's directory, and drops the kernel's cached entries of the domain, at once
// and once more a little later (the second drop; see refresh() in watcher.cpp for why). It is
// the only caller of fuse_lowlevel_notify_*, and calls it with no lock held: a request handler
// that notified could deadlock against the kernel.
//
// Thread-safety: start() and stop() are called by the Filesystem's owner; refresh() before
// start() or on the watcher thread only. It takes the Filesystem's locks in their order
// (filesystem.hpp). No exception leaves the thread: one is logged once, and the next poll tries
// again.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <spdlog/common.h>

#include "fs/filesystem.hpp"

namespace certfs::fs {

class Watcher {
public:
    explicit Watcher(Filesystem& fs) : m_fs(fs) {}
    ~Watcher();
    Watcher(const Watcher&) = delete;
    Watcher& operator=(const Watcher&) = delete;

    // Follows the store's connection that the filesystem just opened, on a thread, for session
    // se (which outlives it); stop() ends and joins the thread. stop() may be called more than
    // once, and without start().
    void start(fuse_session* se);
    void stop();

    // Re-reads the domains if the store changed since the last time; does nothing else then.
    Status refresh();

private:
    using DomainView = Filesystem::DomainView;

    void watch(); // the thread's loop
    // What a commit seen by refresh() does to the domain's pins and directories (m_fs.m_mutex
    // held); returns the line to log.
    std::pair<spdlog::level::level_enum, std::string> commit_started(DomainView& view, const store::Domain& d,
                                                                     bool move_now, PinTime at);
    // The live/<name> directory inodes of the domain for generations other than gen (m_fs.m_mutex held).
    std::vector<fuse_ino_t> live_dirs_except(const std::string& domain, std::int64_t gen) const;
    void run_timers();          // due second drops, of entries and of attributes
    PinTime next_timer() const; // the next of them
    PinDuration redrop_delay() const;

    Filesystem& m_fs;
    fuse_session* m_session = nullptr; // guarded by m_fs.m_store_mutex
    std::int64_t m_data_version = -1;  // of m_fs.m_store's connection; guarded by m_fs.m_store_mutex
    std::set<std::string>
        m_refused_names; // domains not served for their names, logged once; guarded by m_fs.m_store_mutex
    // Inodes whose owner, group or mode changed, and when their attributes are dropped a second
    // time: a lookup that read the old ones just before the change may reply after the first drop,
    // which then found no inode in the kernel to drop. The watcher thread's alone.
    std::vector<std::pair<PinTime, fuse_ino_t>> m_attributes_again;

    // Guards m_stopping only; a leaf: taken with none of the Filesystem's locks held, and none
    // taken while it is held (filesystem.hpp).
    std::mutex m_mutex;
    std::condition_variable m_cv;
    bool m_stopping = false; // guarded by m_mutex
    std::thread m_thread;    // started by start(), joined by stop()
};

} // namespace certfs::fs
