#include "fs/watcher.hpp"

#include <algorithm>
#include <limits>

#include <spdlog/spdlog.h>

#include "fs/errno.hpp"
#include "fs/files.hpp"
#include "store/validate.hpp"

namespace certfs::fs {

namespace {

// A wall-clock time (a certificate's expiry) on the pins' monotonic clock, from `at`, about now.
PinTime pin_time_of(const std::optional<TimePoint>& t, PinTime at)
{
    return t ? at + std::chrono::duration_cast<PinClock::duration>(*t - std::chrono::system_clock::now())
             : PinTime::max();
}

} // namespace

Watcher::~Watcher() { stop(); }

void Watcher::start(fuse_session* se)
{
    {
        std::lock_guard lock(m_fs.m_store_mutex);
        m_session = se;
        // data_version counts per connection: the filesystem just opened a new one, so compare
        // nothing old with it.
        m_data_version = -1;
        m_refused_names.clear(); // said before the daemon's log was set up: say it again there
    }
    m_thread = std::thread([this] { watch(); });
}

void Watcher::stop()
{
    {
        std::lock_guard lock(m_mutex);
        m_stopping = true;
    }
    m_cv.notify_all();
    if (m_thread.joinable()) {
        m_thread.join();
    }
}

void Watcher::watch()
{
    bool failing = false; // an exception was logged: not again until a poll goes through
    std::unique_lock lock(m_mutex);
    while (!m_stopping) {
        lock.unlock();
        PinTime until;
        try {
            if (Status s = refresh(); !s.ok()) {
                spdlog::warn("cannot read the store: {}", s.message());
            }
            run_timers();
            m_fs.collect(PinClock::now());
            // Second drops are due at set times, more often than the store is polled.
            until = std::min(PinClock::now() + m_fs.m_options.poll_interval, next_timer());
            failing = false;
        } catch (...) {
            // The boundary of the thread: the errno means nothing here, the log line does.
            if (!failing) {
                exception_errno("the watcher");
            }
            failing = true;
            // refresh() may have recorded the store's version before it threw: forget it, so
            // that the next poll reads the store again instead of taking the change as seen.
            try {
                std::lock_guard store_lock(m_fs.m_store_mutex);
                m_data_version = -1;
            } catch (...) {
                // a lock that cannot be taken: the next change of the store re-reads it anyway
            }
            until = PinClock::now() + m_fs.m_options.poll_interval;
        }
        lock.lock();
        m_cv.wait_until(lock, until, [this] { return m_stopping; });
    }
}

Status Watcher::refresh()
{
    std::vector<store::Domain> domains;
    std::map<std::string, std::vector<std::pair<std::int64_t, TimePoint>>> index;
    fuse_session* session = nullptr;
    {
        std::lock_guard lock(m_fs.m_store_mutex);
        if (!m_fs.m_store) {
            return Status::Unavailable("the store is not open");
        }
        ASSIGN_OR_RETURN(std::int64_t version, m_fs.m_store->data_version());
        if (version == m_data_version) {
            return Status::Ok();
        }
        ASSIGN_OR_RETURN(domains, m_fs.m_store->list_domains());
        ASSIGN_OR_RETURN(index, m_fs.m_store->generation_index());
        m_data_version = version;
        session = m_session;
        // certfsctl refuses such names, but a row written by hand or by an older version must
        // not become a directory called ".." or one that passes for another name.
        std::erase_if(domains, [&](const store::Domain& d) {
            Status valid = store::check_served_name(d.name);
            if (!valid.ok() && m_refused_names.insert(d.name).second) {
                spdlog::error("not serving a domain of the store: {}", valid.message());
            }
            return !valid.ok();
        });
    }

    if (m_fs.m_options.on_store_change) {
        m_fs.m_options.on_store_change();
    }
    const PinTime at = PinClock::now();
    std::vector<std::pair<fuse_ino_t, std::string>> stale; // kernel entries to drop
    struct Commit {
        std::string name;
        bool now;                         // made with --now: every reader moves at once
        bool starts;                      // it starts a transition: the kernel may be caching entries of the domain
        std::vector<fuse_ino_t> old_dirs; // with now: live/<name> directories of older generations
    };
    std::vector<Commit> commits;                                         // domains whose generation changed
    std::vector<std::pair<spdlog::level::level_enum, std::string>> said; // to log once the lock is released
    std::vector<std::string> retouched;                                  // domains whose owner, group or mode changed
    std::vector<fuse_ino_t> reattributed;                                // their key files' inodes
    {
        std::lock_guard lock(m_fs.m_mutex);
        std::map<std::string, DomainView> next;
        for (const auto& d : domains) {
            DomainView view;
            auto old = m_fs.m_domains.find(d.name);
            if (old != m_fs.m_domains.end() && old->second.id == d.id) {
                view = std::move(old->second);
                const bool now_asked = d.move_now_count != view.move_now_count;
                if (view.current && d.current_gen && (*view.current != *d.current_gen || now_asked)) {
                    Commit c{d.name, now_asked, !view.pins, {}};
                    said.push_back(commit_started(view, d, c.now, at));
                    if (c.now) {
                        c.old_dirs = live_dirs_except(d.name, *d.current_gen);
                    }
                    commits.push_back(std::move(c));
                }
            } else if (old != m_fs.m_domains.end()) {
                stale.emplace_back(Filesystem::k_live, d.name); // removed and added again: a new domain
                stale.emplace_back(Filesystem::k_archive, d.name);
            }
            view.id = d.id;
            view.current = d.current_gen;
            if (view.current_content && view.current_content->gen != view.current) {
                view.current_content.reset(); // the inodes that still serve it hold it
            }
            view.current_not_after = d.current_not_after;
            view.move_now_count = d.move_now_count;
            view.generations = index[d.name];
            if (old != m_fs.m_domains.end() && old->second.id == d.id &&
                (view.uid != d.owner_uid || view.gid != d.group_gid || view.mode != d.mode)) {
                retouched.push_back(d.name);
            }
            view.uid = d.owner_uid;
            view.gid = d.group_gid;
            view.mode = d.mode;
            next.emplace(d.name, std::move(view));
        }
        for (const auto& [name, view] : m_fs.m_domains) {
            if (next.count(name) == 0) {
                stale.emplace_back(Filesystem::k_live, name);
                stale.emplace_back(Filesystem::k_archive, name);
            }
        }
        m_fs.m_domains = std::move(next);
        // A new owner, group or mode applies to the key files already looked up too, in live/
        // and archive/ alike, and under hide_archive to the directories below archive/; the kernel forgets their
        // attributes below, so that its permission check (default_permissions) asks again at the next open.
        for (const std::string& name : retouched) {
            const DomainView& view = m_fs.m_domains.at(name);
            for (auto& [ino, node] : m_fs.m_nodes) {
                if (node.domain != name || node.domain_id != view.id) {
                    continue;
                }
                if (node.kind == Filesystem::Kind::file && k_files[static_cast<std::size_t>(node.file)].is_private) {
                    node.uid = view.uid;
                    node.gid = view.gid;
                    node.mode = view.mode;
                    reattributed.push_back(ino);
                } else if (m_fs.m_options.hide_archive && (node.kind == Filesystem::Kind::archive_domain ||
                                                           node.kind == Filesystem::Kind::archive_gen)) {
                    node.uid = view.uid;
                    node.gid = view.gid;
                    node.mode = archive_dir_mode(view.mode);
                    reattributed.push_back(ino);
                }
            }
        }
    }
    for (fuse_ino_t ino : reattributed) {
        Filesystem::drop_attributes(session, ino);
        m_attributes_again.emplace_back(PinClock::now() + k_max_redrop_delay, ino);
    }
    for (const auto& [level, line] : said) {
        spdlog::log(level, line);
    }
    for (const auto& [parent, name] : stale) {
        Filesystem::drop_entry(session, parent, name);
    }
    for (const Commit& c : commits) {
        Filesystem::drop_entry(session, Filesystem::k_live, c.name);
        // A directory descriptor, working directory or bind mount of an older generation's
        // directory follows the new one from its next open.
        for (fuse_ino_t dir : c.old_dirs) {
            for (const FileSpec& file : k_files) {
                Filesystem::drop_entry(session, dir, file.name);
            }
        }
    }
    // When a transition starts, the kernel was caching the domain's entry, and opens through it
    // were not seen: the window counts from when it holds no such entry any more, so that such
    // an open is a whole window older than the flip (commit_started() stopped the flips until
    // then). The drop above waits for lookups in progress, which hold live/'s lock as the
    // kernel's invalidation does. A revalidation of the entry holds no lock: one that started
    // before the commit may store its long timeout in the dropped entry after the drop, and a
    // lookup of the same directory inode brings that very entry back (d_splice_alias reuses the
    // directory's alias). A second drop, once such a revalidation has surely finished, removes
    // it, and the flip comes one window after that (run_timers()). During a transition no answer
    // may be cached: nothing to wait for.
    const PinTime dropped = PinClock::now();
    std::lock_guard lock(m_fs.m_mutex);
    for (const Commit& c : commits) {
        auto d = m_fs.m_domains.find(c.name);
        if (c.starts && !c.now && d != m_fs.m_domains.end() && d->second.pins) {
            d->second.pins->hold(dropped);
            d->second.redrop = dropped + redrop_delay();
        }
    }
    return Status::Ok();
}

std::pair<spdlog::level::level_enum, std::string> Watcher::commit_started(DomainView& view, const store::Domain& d,
                                                                          bool move_now, PinTime at)
{
    const PinTime expires = pin_time_of(d.current_not_after, at);
    const PinTime old_expires = pin_time_of(view.current_not_after, at);
    const PinOptions options{m_fs.m_options.pin_window, m_fs.m_options.max_hold, proc_runqueue_wait};
    const std::int64_t old_gen = *view.current;
    const std::int64_t gen = *d.current_gen;
    const bool starts = !view.pins;
    if (starts) {
        view.pins = std::make_unique<DomainPins>(old_gen, old_expires, options);
    }
    if (move_now) {
        view.pins->committed_now(gen, expires);
        view.retired.clear();
        return {spdlog::level::warn, d.name + ": generation " + std::to_string(gen) +
                                         " committed with --now: every reader moves to it at once"};
    }
    view.pins->committed(gen, expires, at);
    if (starts) {
        view.pins->block_flips(); // until the drop (refresh())
    }
    // Its directory serves it for as long as a process may be held on it (pins.hpp): a hold
    // begins within a window of the flip, which is up to a second drop and a window away.
    std::erase_if(view.retired, [&](const auto& r) { return r.second <= at; });
    view.retired[old_gen] = at + redrop_delay() + 3 * m_fs.m_options.pin_window + hold_limit(options, old_expires, at);
    view.retired.erase(gen);
    const auto visible_in = (starts ? redrop_delay() : PinDuration(0)) + m_fs.m_options.pin_window;
    return {spdlog::level::info, d.name + ": generation " + std::to_string(gen) + " committed; visible in " +
                                     std::to_string(visible_in.count()) + " ms"};
}

std::vector<fuse_ino_t> Watcher::live_dirs_except(const std::string& domain, std::int64_t gen) const
{
    std::vector<fuse_ino_t> dirs;
    const int kind = static_cast<int>(Filesystem::Kind::live_domain);
    const auto& inodes = m_fs.m_inode_of;
    for (auto it = inodes.lower_bound({kind, domain, std::numeric_limits<std::int64_t>::min(), 0, -1});
         it != inodes.end() && std::get<0>(it->first) == kind && std::get<1>(it->first) == domain; ++it) {
        if (std::get<3>(it->first) != gen) {
            dirs.push_back(it->second);
        }
    }
    return dirs;
}

PinDuration Watcher::redrop_delay() const
{
    return std::min<PinDuration>(k_max_redrop_delay,
                                 std::chrono::duration_cast<PinDuration>(m_fs.m_options.pin_window) / 4);
}

PinTime Watcher::next_timer() const
{
    PinTime next = PinTime::max();
    for (const auto& [at, ino] : m_attributes_again) {
        next = std::min(next, at);
    }
    std::lock_guard lock(m_fs.m_mutex);
    for (const auto& [name, view] : m_fs.m_domains) {
        if (view.redrop) {
            next = std::min(next, *view.redrop);
        }
    }
    return next;
}

void Watcher::run_timers()
{
    fuse_session* session = nullptr;
    {
        std::lock_guard store_lock(m_fs.m_store_mutex);
        session = m_session;
    }
    const PinTime now = PinClock::now();
    std::erase_if(m_attributes_again, [&](const auto& again) {
        if (again.first > now) {
            return false;
        }
        Filesystem::drop_attributes(session, again.second); // an inode freed since: ENOENT, harmless
        return true;
    });
    std::vector<std::string> due;
    {
        std::lock_guard lock(m_fs.m_mutex);
        const PinTime t = PinClock::now();
        for (auto& [name, view] : m_fs.m_domains) {
            if (view.redrop && *view.redrop <= t) {
                view.redrop.reset();
                if (view.pins) {
                    view.pins->block_flips(); // until the drop below
                    due.push_back(name);
                }
            }
        }
    }
    for (const auto& name : due) {
        Filesystem::drop_entry(session, Filesystem::k_live, name);
        const PinTime dropped = PinClock::now();
        std::lock_guard lock(m_fs.m_mutex);
        auto d = m_fs.m_domains.find(name);
        if (d != m_fs.m_domains.end() && d->second.pins) {
            d->second.pins->hold(dropped);
        }
    }
}

} // namespace certfs::fs
