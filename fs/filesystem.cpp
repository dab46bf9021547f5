#include "fs/filesystem.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include <spdlog/spdlog.h>

#include "core/log.hpp"
#include "fs/errno.hpp"

namespace certfs::fs {

namespace {

constexpr fuse_ino_t k_root = FUSE_ROOT_ID;
constexpr fuse_ino_t k_live = 2;
constexpr fuse_ino_t k_archive = 3;
// Content never changes under an inode, so the kernel may keep answers for long.
constexpr double k_long_timeout = 86400.0;

constexpr int k_privkey = 3;
constexpr int k_combined = 4;

int file_index(const char* name)
{
    for (std::size_t i = 0; i < k_file_names.size(); ++i) {
        if (std::strcmp(name, k_file_names[i]) == 0) {
            return static_cast<int>(i);
        }
    }
    return -1;
}

std::optional<std::int64_t> parse_gen(const char* name)
{
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(name, &end, 10);
    if (errno != 0 || end == name || *end != '\0' || v <= 0 || name[0] == '0' || name[0] == '+') {
        return std::nullopt;
    }
    return v;
}

Filesystem* self(fuse_req_t req)
{
    return static_cast<Filesystem*>(fuse_req_userdata(req));
}

TimePoint now()
{
    return std::chrono::system_clock::now();
}

// A wall-clock time (a certificate's expiry) on the pins' monotonic clock, from `at`, about now.
PinTime pin_time_of(const std::optional<TimePoint>& t, PinTime at)
{
    return t ? at + std::chrono::duration_cast<PinClock::duration>(*t - now()) : PinTime::max();
}

// A time on the pins' monotonic clock as the wall clock shows it.
TimePoint wall_time_of(PinTime t)
{
    return now() + std::chrono::duration_cast<std::chrono::system_clock::duration>(t - PinClock::now());
}

// The process's command name, as ps shows it.
std::string command_of(std::uint32_t pid)
{
    std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
    std::string name;
    std::getline(comm, name);
    return name.empty() ? "?" : name;
}

timespec to_timespec(TimePoint t)
{
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    return timespec{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
}

// ---- the operations table: decode, one call, the member replies -----------------------------

void op_init(void* userdata, fuse_conn_info* conn)
{
    static_cast<Filesystem*>(userdata)->init(conn);
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name)
{
    self(req)->lookup(req, parent, name);
}

void op_forget(fuse_req_t req, fuse_ino_t ino, std::uint64_t nlookup)
{
    self(req)->forget(ino, nlookup);
    fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, std::size_t count, fuse_forget_data* forgets)
{
    for (std::size_t i = 0; i < count; ++i) {
        self(req)->forget(forgets[i].ino, forgets[i].nlookup);
    }
    fuse_reply_none(req);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*)
{
    self(req)->getattr(req, ino);
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi)
{
    self(req)->open(req, ino, fi);
}

void op_read(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off, fuse_file_info*)
{
    self(req)->read(req, ino, size, off);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off, fuse_file_info*)
{
    self(req)->readdir(req, ino, size, off);
}

// Everything that would change the tree: the filesystem is read-only.
void op_setattr(fuse_req_t req, fuse_ino_t, struct stat*, int, fuse_file_info*) { fuse_reply_err(req, EROFS); }
void op_mknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { fuse_reply_err(req, EROFS); }
void op_mkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { fuse_reply_err(req, EROFS); }
void op_unlink(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void op_symlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void op_rename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) { fuse_reply_err(req, EROFS); }
void op_link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void op_write(fuse_req_t req, fuse_ino_t, const char*, std::size_t, off_t, fuse_file_info*) { fuse_reply_err(req, EROFS); }
void op_create(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) { fuse_reply_err(req, EROFS); }
void op_setxattr(fuse_req_t req, fuse_ino_t, const char*, const char*, std::size_t, int) { fuse_reply_err(req, EROFS); }
void op_removexattr(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }

const fuse_lowlevel_ops k_operations = [] {
    fuse_lowlevel_ops ops{};
    ops.init = op_init;
    ops.lookup = op_lookup;
    ops.forget = op_forget;
    ops.forget_multi = op_forget_multi;
    ops.getattr = op_getattr;
    ops.open = op_open;
    ops.read = op_read;
    ops.readdir = op_readdir;
    ops.setattr = op_setattr;
    ops.mknod = op_mknod;
    ops.mkdir = op_mkdir;
    ops.unlink = op_unlink;
    ops.rmdir = op_unlink;
    ops.symlink = op_symlink;
    ops.rename = op_rename;
    ops.link = op_link;
    ops.write = op_write;
    ops.create = op_create;
    ops.setxattr = op_setxattr;
    ops.removexattr = op_removexattr;
    return ops;
}();

} // namespace

const fuse_lowlevel_ops& Filesystem::operations()
{
    return k_operations;
}

Filesystem::Filesystem(Options options, std::unique_ptr<store::Store> store)
    : m_options(std::move(options)), m_mounted_at(now()), m_store(std::move(store))
{
    m_nodes[k_root].kind = Kind::root;
    m_nodes[k_live].kind = Kind::live;
    m_nodes[k_archive].kind = Kind::archive;
}

Result<std::unique_ptr<Filesystem>> Filesystem::create(const Options& options)
{
    ASSIGN_OR_RETURN(auto store, store::Store::open(options.db_path, {.create = false, .actor = "certfs", .clock = nullptr}));
    std::unique_ptr<Filesystem> fs(new Filesystem(options, std::move(store)));
    TRY(fs->refresh());
    // SQLite connections must not cross fork() (the daemon may still detach): start() opens
    // the connection the watcher and the handlers use.
    fs->m_store.reset();
    return fs;
}

Filesystem::~Filesystem()
{
    stop();
}

Status Filesystem::start(fuse_session* se)
{
    {
        std::lock_guard lock(m_store_mutex);
        ASSIGN_OR_RETURN(m_store, store::Store::open(m_options.db_path, {.create = false, .actor = "certfs", .clock = nullptr}));
        m_session = se;
        // data_version counts per connection: this is a new one, so compare nothing old with it.
        m_data_version = -1;
    }
    m_watcher = std::thread([this] { watch(); });
    return Status::Ok();
}

void Filesystem::stop()
{
    {
        std::lock_guard lock(m_watch_mutex);
        m_stopping = true;
    }
    m_watch_cv.notify_all();
    if (m_watcher.joinable()) {
        m_watcher.join();
    }
}

void Filesystem::watch()
{
    std::unique_lock lock(m_watch_mutex);
    while (!m_stopping) {
        lock.unlock();
        if (Status s = refresh(); !s.ok()) {
            spdlog::warn("cannot read the store: {}", s.message());
        }
        run_timers();
        // Second drops are due at set times, more often than the store is polled.
        const auto until = std::min(PinClock::now() + m_options.poll_interval, next_timer());
        lock.lock();
        m_watch_cv.wait_until(lock, until, [this] { return m_stopping; });
    }
}

Status Filesystem::refresh()
{
    std::vector<store::Domain> domains;
    std::map<std::string, std::vector<std::pair<std::int64_t, TimePoint>>> index;
    fuse_session* session = nullptr;
    {
        std::lock_guard lock(m_store_mutex);
        if (!m_store) {
            return Status::Unavailable("the store is not open");
        }
        ASSIGN_OR_RETURN(std::int64_t version, m_store->data_version());
        if (version == m_data_version) {
            return Status::Ok();
        }
        ASSIGN_OR_RETURN(domains, m_store->list_domains());
        ASSIGN_OR_RETURN(index, m_store->generation_index());
        m_data_version = version;
        session = m_session;
    }

    if (m_options.on_store_change) {
        m_options.on_store_change();
    }
    const PinTime at = PinClock::now();
    std::vector<std::pair<fuse_ino_t, std::string>> stale; // kernel entries to drop
    struct Commit {
        std::string name;
        bool now;    // made with --now: every reader moves at once
        bool starts; // it starts a transition: the kernel may be caching entries of the domain
        std::vector<fuse_ino_t> old_dirs; // with now: live/<name> directories of older generations
    };
    std::vector<Commit> commits; // domains whose generation changed
    std::vector<std::pair<spdlog::level::level_enum, std::string>> said; // to log once the lock is released
    {
        std::lock_guard lock(m_mutex);
        std::map<std::string, DomainView> next;
        for (const auto& d : domains) {
            DomainView view;
            auto old = m_domains.find(d.name);
            if (old != m_domains.end() && old->second.id == d.id) {
                view = std::move(old->second);
                const bool now_asked = d.move_now_count != view.move_now_count;
                if (view.current && d.current_gen && (*view.current != *d.current_gen || now_asked)) {
                    Commit c{d.name, now_asked, !view.pins, {}};
                    said.push_back(commit_started(view, d, c.now, at));
                    if (c.now) {
                        c.old_dirs = live_dirs_except(view.id, *d.current_gen);
                    }
                    commits.push_back(std::move(c));
                }
            } else if (old != m_domains.end()) {
                stale.emplace_back(k_live, d.name); // removed and added again: a new domain
                stale.emplace_back(k_archive, d.name);
            }
            view.id = d.id;
            view.current = d.current_gen;
            view.current_not_after = d.current_not_after;
            view.move_now_count = d.move_now_count;
            view.generations = index[d.name];
            view.uid = d.owner_uid;
            view.gid = d.group_gid;
            view.mode = d.mode;
            next.emplace(d.name, std::move(view));
        }
        for (const auto& [name, view] : m_domains) {
            if (next.count(name) == 0) {
                stale.emplace_back(k_live, name);
                stale.emplace_back(k_archive, name);
            }
        }
        m_domains = std::move(next);
    }
    for (const auto& [level, line] : said) {
        spdlog::log(level, line);
    }
    for (const auto& [parent, name] : stale) {
        drop_entry(session, parent, name);
    }
    for (const Commit& c : commits) {
        drop_entry(session, k_live, c.name);
        // A directory descriptor, working directory or bind mount of an older generation's
        // directory follows the new one from its next open.
        for (fuse_ino_t dir : c.old_dirs) {
            for (const char* file : k_file_names) {
                drop_entry(session, dir, file);
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
    std::lock_guard lock(m_mutex);
    for (const Commit& c : commits) {
        auto d = m_domains.find(c.name);
        if (c.starts && !c.now && d != m_domains.end() && d->second.pins) {
            d->second.pins->hold(dropped);
            d->second.redrop = dropped + redrop_delay();
        }
    }
    return Status::Ok();
}

std::pair<spdlog::level::level_enum, std::string> Filesystem::commit_started(DomainView& view, const store::Domain& d,
                                                                             bool move_now, PinTime at)
{
    const PinTime expires = pin_time_of(d.current_not_after, at);
    const PinTime old_expires = pin_time_of(view.current_not_after, at);
    const PinOptions options{m_options.pin_window, m_options.max_hold};
    const std::int64_t old_gen = *view.current;
    const std::int64_t gen = *d.current_gen;
    const bool starts = !view.pins;
    if (starts) {
        view.pins = std::make_unique<DomainPins>(old_gen, old_expires, options);
    }
    if (move_now) {
        view.pins->committed_now(gen, expires);
        view.retired.clear();
        return {spdlog::level::warn,
                d.name + ": generation " + std::to_string(gen) + " committed with --now: every reader moves to it at once"};
    }
    view.pins->committed(gen, expires, at);
    if (starts) {
        view.pins->block_flips(); // until the drop (refresh())
    }
    // Its directory serves it for as long as a process may be held on it (pins.hpp): a hold
    // begins within a window of the flip, which is up to a second drop and a window away.
    std::erase_if(view.retired, [&](const auto& r) { return r.second <= at; });
    view.retired[old_gen] = at + redrop_delay() + 3 * m_options.pin_window + hold_limit(options, old_expires, at);
    view.retired.erase(gen);
    const auto visible_in = (starts ? redrop_delay() : PinDuration(0)) + m_options.pin_window;
    return {spdlog::level::info, d.name + ": generation " + std::to_string(gen) + " committed; visible in " +
                                     std::to_string(visible_in.count()) + " ms"};
}

std::vector<fuse_ino_t> Filesystem::live_dirs_except(std::int64_t domain_id, std::int64_t gen) const
{
    std::vector<fuse_ino_t> dirs;
    const int kind = static_cast<int>(Kind::live_domain);
    for (auto it = m_inode_of.lower_bound({kind, domain_id, 0, -1});
         it != m_inode_of.end() && std::get<0>(it->first) == kind && std::get<1>(it->first) == domain_id; ++it) {
        if (std::get<2>(it->first) != gen) {
            dirs.push_back(it->second);
        }
    }
    return dirs;
}

double Filesystem::live_file_timeout() const
{
    // Long enough to cost nothing in steady state; no longer than a hold, which it ends.
    return std::chrono::duration<double>(std::min<Duration>(k_live_file_timeout, m_options.max_hold)).count();
}

PinDuration Filesystem::redrop_delay() const
{
    return std::min<PinDuration>(k_max_redrop_delay, std::chrono::duration_cast<PinDuration>(m_options.pin_window) / 4);
}

PinTime Filesystem::next_timer() const
{
    PinTime next = PinTime::max();
    std::lock_guard lock(m_mutex);
    for (const auto& [name, view] : m_domains) {
        if (view.redrop) {
            next = std::min(next, *view.redrop);
        }
    }
    return next;
}

void Filesystem::run_timers()
{
    fuse_session* session = nullptr;
    {
        std::lock_guard store_lock(m_store_mutex);
        session = m_session;
    }
    std::vector<std::string> due;
    {
        std::lock_guard lock(m_mutex);
        const PinTime t = PinClock::now();
        for (auto& [name, view] : m_domains) {
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
        drop_entry(session, k_live, name);
        const PinTime dropped = PinClock::now();
        std::lock_guard lock(m_mutex);
        auto d = m_domains.find(name);
        if (d != m_domains.end() && d->second.pins) {
            d->second.pins->hold(dropped);
        }
    }
}

HoldCounts Filesystem::hold_counts() const
{
    std::lock_guard lock(m_mutex);
    return m_holds;
}

void Filesystem::report(const std::string& domain, std::uint32_t pid, const DomainPins::Choice& choice)
{
    const auto held_for = std::chrono::duration_cast<Duration>(PinClock::now() - choice.held_since);
    if (choice.event == DomainPins::Event::held) {
        {
            std::lock_guard lock(m_mutex);
            ++m_holds.held;
        }
        log_notice("process {} ({}) keeps reading generation {} of {} because it never pauses; it moves when it "
                   "pauses, at the latest at {}",
                   pid, command_of(pid), choice.held_gen, domain, format_rfc3339(wall_time_of(choice.bound)));
    } else if (choice.event == DomainPins::Event::moved_at_bound) {
        {
            std::lock_guard lock(m_mutex);
            ++m_holds.moved_at_bound;
        }
        spdlog::warn("process {} ({}) moved from generation {} to {} of {} at the bound, after {} without a pause: "
                     "if it was between its key and its certificate, it paired them wrongly once",
                     pid, command_of(pid), choice.held_gen, choice.gen, domain, format_duration(held_for));
    }
}

void Filesystem::drop_entry(fuse_session* session, fuse_ino_t parent, const std::string& name)
{
    if (session == nullptr) {
        return; // not mounted yet: the kernel holds no entry
    }
    // ENOENT: the kernel had no such entry cached; nothing to do.
    int rc = fuse_lowlevel_notify_inval_entry(session, parent, name.c_str(), name.size());
    if (rc != 0 && rc != -ENOENT) {
        spdlog::warn("cannot drop the kernel's entry {} (in inode {}): {}", name, parent, std::strerror(-rc));
    }
}

Result<std::shared_ptr<const Filesystem::Content>> Filesystem::load_content(const std::string& domain,
                                                                            std::int64_t gen)
{
    std::lock_guard lock(m_store_mutex);
    if (!m_store) {
        return Status::Unavailable("the store is not open");
    }
    ASSIGN_OR_RETURN(store::Generation g, m_store->get_generation(domain, gen));
    auto content = std::make_shared<Content>();
    content->files = {
        std::make_shared<const std::string>(g.cert_pem),
        std::make_shared<const std::string>(g.chain_pem),
        std::make_shared<const std::string>(g.fullchain_pem()),
        std::make_shared<const std::string>(g.key_pem),
        std::make_shared<const std::string>(g.combined_pem()),
    };
    content->created_at = g.created_at;
    return std::shared_ptr<const Content>(std::move(content));
}

fuse_ino_t Filesystem::inode_for(Kind kind, const std::string& domain, std::int64_t domain_id, std::int64_t gen,
                                 int file)
{
    auto key = std::make_tuple(static_cast<int>(kind), domain_id, gen, file);
    auto it = m_inode_of.find(key);
    if (it != m_inode_of.end()) {
        return it->second;
    }
    fuse_ino_t ino = m_next_ino++;
    m_inode_of.emplace(key, ino);
    Node node;
    node.kind = kind;
    node.domain = domain;
    node.domain_id = domain_id;
    node.gen = gen;
    node.file = file;
    m_nodes.emplace(ino, std::move(node));
    return ino;
}

std::uint32_t Filesystem::process_of(std::uint32_t tid)
{
    const PinTime t = PinClock::now();
    {
        std::lock_guard lock(m_mutex);
        auto it = m_tgid_of.find(tid);
        // Unused for a window, the thread may have ended and its id gone to another process.
        if (it != m_tgid_of.end() && t - it->second.second <= m_options.pin_window) {
            it->second.second = t;
            return it->second.first;
        }
    }
    std::optional<std::uint32_t> pid;
    std::ifstream status("/proc/" + std::to_string(tid) + "/status");
    for (std::string line; std::getline(status, line);) {
        if (line.rfind("Tgid:", 0) == 0) {
            pid = static_cast<std::uint32_t>(std::strtoul(line.c_str() + 5, nullptr, 10));
            break;
        }
    }
    if (!pid) {
        // Outside the daemon's pid namespace (tid 0), or gone: such threads share one pin, or
        // have one each. Late for some, never wrong for a process that is visible.
        if (!m_unknown_process_said.exchange(true)) {
            spdlog::warn("cannot tell the process of thread {} (not in the daemon's pid namespace, or gone): it is "
                         "pinned on its own",
                         tid);
        }
        pid = tid;
    }
    std::lock_guard lock(m_mutex);
    m_tgid_of[tid] = {*pid, t};
    return *pid;
}

Result<Filesystem::Entry> Filesystem::file_entry(const std::string& domain, std::int64_t domain_id, std::int64_t gen,
                                                 int file)
{
    std::shared_ptr<const Content> content;
    {
        std::lock_guard lock(m_mutex);
        auto d = m_domains.find(domain);
        if (d == m_domains.end() || d->second.id != domain_id) {
            return Status::NotFound("no domain " + domain);
        }
        auto c = m_content.find({domain_id, gen});
        if (c != m_content.end()) {
            content = c->second;
        }
    }
    if (!content) {
        ASSIGN_OR_RETURN(content, load_content(domain, gen));
    }
    std::lock_guard lock(m_mutex);
    m_content.emplace(std::make_pair(domain_id, gen), content);
    fuse_ino_t ino = inode_for(Kind::file, domain, domain_id, gen, file);
    Node& node = m_nodes.at(ino);
    node.content = content;
    auto d = m_domains.find(domain);
    bool secret = file == k_privkey || file == k_combined;
    node.uid = secret && d != m_domains.end() ? d->second.uid : 0;
    node.gid = secret && d != m_domains.end() ? d->second.gid : 0;
    node.mode = secret && d != m_domains.end() ? d->second.mode : 0644;
    return Entry{ino, k_long_timeout};
}

Result<Filesystem::Choice> Filesystem::generation_for(fuse_req_t req, const std::string& name, std::int64_t domain_id)
{
    {
        std::lock_guard lock(m_mutex);
        auto d = m_domains.find(name);
        if (d == m_domains.end() || d->second.id != domain_id || !d->second.current) {
            return Status::NotFound(name);
        }
        if (!d->second.pins) {
            return Choice{*d->second.current, true};
        }
    }
    // In a transition: which generation this process gets (pins.hpp); the kernel must ask again
    // next time.
    const std::uint32_t pid = process_of(static_cast<std::uint32_t>(fuse_req_ctx(req)->pid));
    DomainPins::Choice choice;
    Choice chosen;
    {
        std::lock_guard lock(m_mutex);
        auto d = m_domains.find(name);
        if (d == m_domains.end() || d->second.id != domain_id || !d->second.current) {
            return Status::NotFound(name);
        }
        chosen = Choice{*d->second.current, true};
        if (d->second.pins) {
            const PinTime t = PinClock::now();
            choice = d->second.pins->choose(pid, t);
            chosen.gen = choice.gen;
            if (d->second.pins->in_transition(t)) {
                chosen.cacheable = false;
            } else {
                d->second.pins.reset();
                m_tgid_of.clear();
            }
        }
    }
    if (choice.event != DomainPins::Event::none) {
        report(name, pid, choice);
    }
    return chosen;
}

Result<Filesystem::Entry> Filesystem::resolve(fuse_req_t req, fuse_ino_t parent, const char* name)
{
    Node dir;
    {
        std::lock_guard lock(m_mutex);
        auto it = m_nodes.find(parent);
        if (it == m_nodes.end()) {
            return Status::NotFound("stale directory");
        }
        dir = it->second;
    }
    switch (dir.kind) {
    case Kind::root:
        if (std::strcmp(name, "live") == 0) {
            return Entry{k_live, k_long_timeout};
        }
        if (std::strcmp(name, "archive") == 0) {
            return Entry{k_archive, k_long_timeout};
        }
        return Status::NotFound(name);
    case Kind::live: {
        std::int64_t domain_id = 0;
        {
            std::lock_guard lock(m_mutex);
            auto d = m_domains.find(name);
            if (d == m_domains.end() || !d->second.current) {
                return Status::NotFound(name);
            }
            domain_id = d->second.id;
        }
        ASSIGN_OR_RETURN(Choice chosen, generation_for(req, name, domain_id));
        std::lock_guard lock(m_mutex);
        return Entry{inode_for(Kind::live_domain, name, domain_id, chosen.gen, -1),
                     chosen.cacheable ? k_long_timeout : 0.0};
    }
    case Kind::archive: {
        std::lock_guard lock(m_mutex);
        auto d = m_domains.find(name);
        if (d == m_domains.end() || d->second.generations.empty()) {
            return Status::NotFound(name);
        }
        return Entry{inode_for(Kind::archive_domain, name, d->second.id, 0, -1), k_long_timeout};
    }
    case Kind::live_domain: {
        int file = file_index(name);
        if (file < 0) {
            return Status::NotFound(name);
        }
        // The directory serves its generation while a process may be held on it. Then a
        // directory descriptor, working directory or bind mount of it follows the domain as a
        // path from the top does (generation_for()), uncached: an entry of another generation
        // must not stay in this directory, which may serve its own again (a rollback).
        bool serves = false;
        {
            std::lock_guard lock(m_mutex);
            auto d = m_domains.find(dir.domain);
            if (d == m_domains.end() || d->second.id != dir.domain_id || !d->second.current) {
                return Status::NotFound(dir.domain);
            }
            auto r = d->second.retired.find(dir.gen);
            serves = dir.gen == *d->second.current || (r != d->second.retired.end() && PinClock::now() < r->second);
        }
        if (serves) {
            ASSIGN_OR_RETURN(Entry entry, file_entry(dir.domain, dir.domain_id, dir.gen, file));
            entry.timeout = live_file_timeout();
            return entry;
        }
        ASSIGN_OR_RETURN(Choice chosen, generation_for(req, dir.domain, dir.domain_id));
        ASSIGN_OR_RETURN(Entry entry, file_entry(dir.domain, dir.domain_id, chosen.gen, file));
        entry.timeout = 0.0;
        return entry;
    }
    case Kind::archive_gen: {
        int file = file_index(name);
        if (file < 0) {
            return Status::NotFound(name);
        }
        return file_entry(dir.domain, dir.domain_id, dir.gen, file);
    }
    case Kind::archive_domain: {
        auto gen = parse_gen(name);
        std::lock_guard lock(m_mutex);
        auto d = m_domains.find(dir.domain);
        if (!gen || d == m_domains.end() || d->second.id != dir.domain_id) {
            return Status::NotFound(name);
        }
        const auto& gens = d->second.generations;
        bool exists = std::any_of(gens.begin(), gens.end(), [&](const auto& g) { return g.first == *gen; });
        if (!exists) {
            return Status::NotFound(name);
        }
        return Entry{inode_for(Kind::archive_gen, dir.domain, dir.domain_id, *gen, -1), k_long_timeout};
    }
    case Kind::file:
        return Status::NotFound(name);
    }
    return Status::NotFound(name);
}

void Filesystem::init(fuse_conn_info* conn)
{
    // readdirplus would create dentries behind the transition logic's back.
    conn->want &= ~FUSE_CAP_READDIRPLUS;
    m_no_open = (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) != 0;
}

void Filesystem::lookup(fuse_req_t req, fuse_ino_t parent, const char* name)
{
    auto entry = resolve(req, parent, name);
    if (!entry.ok()) {
        fuse_reply_err(req, to_errno(entry.status()));
        return;
    }
    fuse_entry_param e{};
    {
        std::lock_guard lock(m_mutex);
        Node& node = m_nodes.at(entry->ino);
        ++node.nlookup;
        e.attr = attributes(entry->ino, node);
    }
    e.ino = entry->ino;
    e.attr_timeout = k_long_timeout;
    e.entry_timeout = entry->timeout;
    fuse_reply_entry(req, &e);
}

void Filesystem::forget(fuse_ino_t ino, std::uint64_t nlookup)
{
    std::lock_guard lock(m_mutex);
    auto it = m_nodes.find(ino);
    if (it == m_nodes.end()) {
        return;
    }
    it->second.nlookup -= std::min(it->second.nlookup, nlookup);
}

struct stat Filesystem::attributes(fuse_ino_t ino, const Node& node) const
{
    struct stat st{};
    st.st_ino = ino;
    st.st_nlink = 1;
    st.st_blksize = 4096;
    timespec t = to_timespec(m_mounted_at);
    if (node.kind == Kind::file) {
        st.st_mode = S_IFREG | node.mode;
        st.st_uid = node.uid;
        st.st_gid = node.gid;
        if (node.content) {
            st.st_size = static_cast<off_t>(node.content->files[static_cast<std::size_t>(node.file)]->size());
            t = to_timespec(node.content->created_at);
        }
        st.st_blocks = (st.st_size + 511) / 512;
    } else {
        st.st_mode = S_IFDIR | 0755;
        st.st_nlink = 2;
    }
    st.st_atim = st.st_mtim = st.st_ctim = t;
    return st;
}

void Filesystem::getattr(fuse_req_t req, fuse_ino_t ino)
{
    struct stat st{};
    {
        std::lock_guard lock(m_mutex);
        auto it = m_nodes.find(ino);
        if (it == m_nodes.end()) {
            fuse_reply_err(req, ENOENT);
            return;
        }
        st = attributes(ino, it->second);
    }
    fuse_reply_attr(req, &st, k_long_timeout);
}

void Filesystem::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi)
{
    if ((fi->flags & O_ACCMODE) != O_RDONLY) {
        fuse_reply_err(req, EROFS);
        return;
    }
    {
        std::lock_guard lock(m_mutex);
        auto it = m_nodes.find(ino);
        if (it == m_nodes.end() || it->second.kind != Kind::file) {
            fuse_reply_err(req, it == m_nodes.end() ? ENOENT : EISDIR);
            return;
        }
    }
    if (m_no_open) {
        // The kernel opens by itself from now on: no round trip per open.
        fuse_reply_err(req, ENOSYS);
        return;
    }
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
}

void Filesystem::read(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off)
{
    std::shared_ptr<const std::string> data;
    {
        std::lock_guard lock(m_mutex);
        auto it = m_nodes.find(ino);
        if (it == m_nodes.end() || !it->second.content) {
            fuse_reply_err(req, it == m_nodes.end() ? ENOENT : EIO);
            return;
        }
        data = it->second.content->files[static_cast<std::size_t>(it->second.file)];
    }
    auto offset = static_cast<std::size_t>(std::max<off_t>(off, 0));
    if (offset >= data->size()) {
        fuse_reply_buf(req, nullptr, 0);
        return;
    }
    fuse_reply_buf(req, data->data() + offset, std::min(size, data->size() - offset));
}

void Filesystem::readdir(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off)
{
    struct Item {
        std::string name;
        fuse_ino_t ino;
        mode_t type;
    };
    std::vector<Item> items;
    {
        std::lock_guard lock(m_mutex);
        auto it = m_nodes.find(ino);
        if (it == m_nodes.end()) {
            fuse_reply_err(req, ENOENT);
            return;
        }
        const Node dir = it->second;
        items.push_back({".", ino, S_IFDIR});
        items.push_back({"..", k_root, S_IFDIR});
        switch (dir.kind) {
        case Kind::root:
            items.push_back({"live", k_live, S_IFDIR});
            items.push_back({"archive", k_archive, S_IFDIR});
            break;
        case Kind::live:
            for (const auto& [name, view] : m_domains) {
                if (view.current) {
                    items.push_back({name, inode_for(Kind::live_domain, name, view.id, *view.current, -1), S_IFDIR});
                }
            }
            break;
        case Kind::archive:
            for (const auto& [name, view] : m_domains) {
                if (!view.generations.empty()) {
                    items.push_back({name, inode_for(Kind::archive_domain, name, view.id, 0, -1), S_IFDIR});
                }
            }
            break;
        case Kind::live_domain:
        case Kind::archive_gen: {
            auto d = m_domains.find(dir.domain);
            if (d == m_domains.end() || d->second.id != dir.domain_id) {
                break;
            }
            for (int f = 0; f < static_cast<int>(k_file_names.size()); ++f) {
                items.push_back({k_file_names[static_cast<std::size_t>(f)],
                                 inode_for(Kind::file, dir.domain, dir.domain_id, dir.gen, f), S_IFREG});
            }
            break;
        }
        case Kind::archive_domain: {
            auto d = m_domains.find(dir.domain);
            if (d != m_domains.end()) {
                for (const auto& [gen, at] : d->second.generations) {
                    items.push_back({std::to_string(gen),
                                     inode_for(Kind::archive_gen, dir.domain, dir.domain_id, gen, -1), S_IFDIR});
                }
            }
            break;
        }
        case Kind::file:
            fuse_reply_err(req, ENOTDIR);
            return;
        }
    }
    std::vector<char> buf(size);
    std::size_t used = 0;
    for (auto i = static_cast<std::size_t>(std::max<off_t>(off, 0)); i < items.size(); ++i) {
        struct stat st{};
        st.st_ino = items[i].ino;
        st.st_mode = items[i].type;
        std::size_t n = fuse_add_direntry(req, buf.data() + used, size - used, items[i].name.c_str(), &st,
                                          static_cast<off_t>(i + 1));
        if (n > size - used) {
            break;
        }
        used += n;
    }
    fuse_reply_buf(req, buf.data(), used);
}

} // namespace certfs::fs
