#include "fs/filesystem.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include <spdlog/spdlog.h>

#include "core/log.hpp"
#include "core/pki.hpp"
#include "fs/errno.hpp"
#include "fs/watcher.hpp"
#include "store/mount.hpp"

namespace certfs::fs {

namespace {

// Content never changes under an inode, so the kernel may keep answers for long.
constexpr double k_long_timeout = 86400.0;

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

Filesystem* self(fuse_req_t req) { return static_cast<Filesystem*>(fuse_req_userdata(req)); }

TimePoint now() { return std::chrono::system_clock::now(); }

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

// ---- the operations table: decode, one call, exactly one reply ------------------------------

// The boundary of a request: runs compute(), which returns a Result, and replies exactly once:
// reply(value) on success, the Status's errno (to_errno()) on an error, and ENOMEM or EIO if an
// exception left compute() (logged by exception_errno()). reply() only calls a fuse_reply_*.
// compute() releases every lock before it returns, so no reply runs under one.
template <typename Compute, typename Reply>
void answer(fuse_req_t req, const char* op, Compute&& compute, Reply&& reply) noexcept
{
    using R = decltype(compute());
    std::optional<R> result;
    int err = 0;
    try {
        result.emplace(compute());
    } catch (...) {
        err = exception_errno(op);
    }
    if (!result) {
        fuse_reply_err(req, err);
    } else if (!result->ok()) {
        fuse_reply_err(req, to_errno(result->status()));
    } else {
        reply(result->value());
    }
}

// The boundary of what has no reply but fuse_reply_none() (forget) or none at all (init).
template <typename Body>
void contain(const char* op, Body&& body) noexcept
{
    try {
        body();
    } catch (...) {
        exception_errno(op);
    }
}

void op_init(void* userdata, fuse_conn_info* conn)
{
    contain("init", [&] { static_cast<Filesystem*>(userdata)->init(conn); });
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name)
{
    answer(
        req, "lookup", [&] { return self(req)->do_lookup(req, parent, name); },
        [&](const fuse_entry_param& e) { fuse_reply_entry(req, &e); });
}

void op_forget(fuse_req_t req, fuse_ino_t ino, std::uint64_t nlookup)
{
    contain("forget", [&] { self(req)->forget(ino, nlookup); });
    fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, std::size_t count, fuse_forget_data* forgets)
{
    contain("forget", [&] {
        for (std::size_t i = 0; i < count; ++i) {
            self(req)->forget(forgets[i].ino, forgets[i].nlookup);
        }
    });
    fuse_reply_none(req);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*)
{
    answer(
        req, "getattr", [&] { return self(req)->do_getattr(ino); },
        [&](const struct stat& st) { fuse_reply_attr(req, &st, k_long_timeout); });
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi)
{
    if ((fi->flags & O_ACCMODE) != O_RDONLY) {
        fuse_reply_err(req, EROFS);
        return;
    }
    answer(
        req, "open", [&] { return self(req)->do_open(ino); },
        [&](Filesystem::OpenAnswer a) {
            switch (a) {
            case Filesystem::OpenAnswer::open:
                fi->keep_cache = 1;
                fuse_reply_open(req, fi);
                return;
            case Filesystem::OpenAnswer::kernel_opens:
                fuse_reply_err(req, ENOSYS);
                return;
            case Filesystem::OpenAnswer::not_a_file:
                fuse_reply_err(req, EISDIR);
                return;
            }
            fuse_reply_err(req, EIO);
        });
}

void op_read(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off, fuse_file_info*)
{
    answer(
        req, "read", [&] { return self(req)->do_read(req, ino, size, off); },
        [&](const Filesystem::Bytes& b) {
            fuse_reply_buf(req, b.size > 0 ? b.data->data() + b.offset : nullptr, b.size);
        });
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off, fuse_file_info*)
{
    answer(
        req, "readdir", [&] { return self(req)->do_readdir(req, ino, size, off); },
        [&](const Filesystem::Listing& l) {
            if (!l.is_directory) {
                fuse_reply_err(req, ENOTDIR);
                return;
            }
            fuse_reply_buf(req, l.entries.data(), l.entries.size());
        });
}

// What getxattr and listxattr answer with `value`: its size when asked for the size (size 0),
// ERANGE when it does not fit in `size` bytes, the bytes otherwise.
void reply_xattr(fuse_req_t req, std::size_t size, const std::string& value)
{
    if (size == 0) {
        fuse_reply_xattr(req, value.size());
    } else if (size < value.size()) {
        fuse_reply_err(req, ERANGE);
    } else {
        fuse_reply_buf(req, value.data(), value.size());
    }
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, std::size_t size)
{
    answer(
        req, "getxattr", [&] { return self(req)->do_getxattr(ino, name); },
        [&](const std::optional<std::string>& value) {
            if (!value) {
                fuse_reply_err(req, ENODATA);
                return;
            }
            reply_xattr(req, size, *value);
        });
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, std::size_t size)
{
    answer(
        req, "listxattr", [&] { return self(req)->do_listxattr(ino); },
        [&](const std::string& names) { reply_xattr(req, size, names); });
}

// Everything that would change the tree: the filesystem is read-only.
void op_setattr(fuse_req_t req, fuse_ino_t, struct stat*, int, fuse_file_info*) { fuse_reply_err(req, EROFS); }
void op_mknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { fuse_reply_err(req, EROFS); }
void op_mkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { fuse_reply_err(req, EROFS); }
void op_unlink(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void op_symlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void op_rename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned)
{
    fuse_reply_err(req, EROFS);
}
void op_link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void op_write(fuse_req_t req, fuse_ino_t, const char*, std::size_t, off_t, fuse_file_info*)
{
    fuse_reply_err(req, EROFS);
}
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
    ops.getxattr = op_getxattr;
    ops.listxattr = op_listxattr;
    ops.setxattr = op_setxattr;
    ops.removexattr = op_removexattr;
    return ops;
}();

} // namespace

const fuse_lowlevel_ops& Filesystem::operations() { return k_operations; }

Filesystem::Filesystem(Options options, std::unique_ptr<store::Store> store)
    : m_options(std::move(options)), m_mounted_at(now()), m_store(std::move(store)),
      m_watcher(std::make_unique<Watcher>(*this))
{
    m_nodes[k_root].kind = Kind::root;
    m_nodes[k_live].kind = Kind::live;
    m_nodes[k_archive].kind = Kind::archive;
}

Result<std::unique_ptr<Filesystem>> Filesystem::create(const Options& options)
{
    ASSIGN_OR_RETURN(
        auto store,
        store::Store::open(options.db_path, {.create = false, .actor = "certfs", .clock = nullptr}, options.store_key));
    // A mount that could not open the keys would serve no privkey.pem: it does not start.
    TRY(store->check_secrets_readable().with_context("cannot mount " + options.db_path));
    std::unique_ptr<Filesystem> fs(new Filesystem(options, std::move(store)));
    TRY(fs->m_watcher->refresh());
    // SQLite connections must not cross fork() (the daemon may still detach): start() opens
    // the connection the watcher and the handlers use.
    fs->m_store.reset();
    return fs;
}

Filesystem::~Filesystem() { stop(); }

Status Filesystem::start(fuse_session* se)
{
    {
        std::lock_guard lock(m_store_mutex);
        ASSIGN_OR_RETURN(m_store,
                         store::Store::open(m_options.db_path, {.create = false, .actor = "certfs", .clock = nullptr},
                                            m_options.store_key));
    }
    m_watcher->start(se);
    return Status::Ok();
}

void Filesystem::stop() { m_watcher->stop(); }

double Filesystem::live_file_timeout() const
{
    // Long enough to cost nothing in steady state; no longer than a hold, which it ends.
    return std::chrono::duration<double>(std::min<Duration>(k_live_file_timeout, m_options.max_hold)).count();
}

HoldCounts Filesystem::hold_counts() const
{
    std::lock_guard lock(m_mutex);
    return m_holds;
}

std::optional<std::int64_t> Filesystem::visible_of(DomainView& view)
{
    return view.pins ? std::optional<std::int64_t>(view.pins->visible(PinClock::now())) : view.current;
}

std::optional<std::int64_t> Filesystem::visible_generation(const std::string& name)
{
    std::lock_guard lock(m_mutex);
    auto d = m_domains.find(name);
    return d == m_domains.end() ? std::nullopt : visible_of(d->second);
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
        spdlog::warn(
            "{}",
            errno_status("cannot drop the kernel's entry " + name + " (in inode " + std::to_string(parent) + ")", -rc)
                .message());
    }
}

void Filesystem::drop_attributes(fuse_session* session, fuse_ino_t ino)
{
    if (session == nullptr) {
        return;
    }
    // A negative offset: the attributes only, not the page cache. ENOENT: the kernel has no
    // such inode any more.
    int rc = fuse_lowlevel_notify_inval_inode(session, ino, -1, 0);
    if (rc != 0 && rc != -ENOENT) {
        spdlog::warn(
            "{}", errno_status("cannot drop the kernel's attributes of inode " + std::to_string(ino), -rc).message());
    }
}

Result<std::shared_ptr<const Filesystem::Content>> Filesystem::load_content(const std::string& domain, std::int64_t gen)
{
    std::lock_guard lock(m_store_mutex);
    if (!m_store) {
        return Status::Unavailable("the store is not open");
    }
    ASSIGN_OR_RETURN(store::Generation g, m_store->get_generation(domain, gen));
    auto content = std::make_shared<Content>();
    content->gen = gen;
    for (std::size_t i = 0; i < k_file_count; ++i) {
        if (k_files[i].is_private) {
            // Overwritten when the last inode and the last read let go of it. What SQLite and
            // the concatenations of file_content() left in freed memory is not reached.
            content->files[i] = std::shared_ptr<const std::string>(new std::string(file_content(k_files[i].kind, g)),
                                                                   [](std::string* key) {
                                                                       pki::cleanse(*key);
                                                                       delete key;
                                                                   });
        } else {
            content->files[i] = std::make_shared<const std::string>(file_content(k_files[i].kind, g));
        }
    }
    content->created_at = g.created_at;
    pki::cleanse(g.key_pem);
    return std::shared_ptr<const Content>(std::move(content));
}

std::map<fuse_ino_t, Filesystem::Node>::iterator
Filesystem::inode_for(Kind kind, const std::string& domain, std::int64_t domain_id, std::int64_t gen, int file)
{
    auto key = std::make_tuple(static_cast<int>(kind), domain, domain_id, gen, file);
    if (auto it = m_inode_of.find(key); it != m_inode_of.end()) {
        return m_nodes.find(it->second); // free_node() erases both: it is there
    }
    fuse_ino_t ino = m_next_ino++;
    m_inode_of.emplace(key, ino);
    Node node;
    node.kind = kind;
    node.domain = domain;
    node.domain_id = domain_id;
    node.gen = gen;
    node.file = file;
    if (kind == Kind::archive_domain || kind == Kind::archive_gen) {
        node.mode = 0755;
        if (auto d = m_domains.find(domain); m_options.hide_archive && d != m_domains.end()) {
            node.uid = d->second.uid;
            node.gid = d->second.gid;
            node.mode = archive_dir_mode(d->second.mode);
        }
    }
    return m_nodes.emplace(ino, std::move(node)).first;
}

fuse_ino_t Filesystem::referenced_inode(Kind kind, const std::string& domain, std::int64_t domain_id, std::int64_t gen,
                                        int file)
{
    auto it = inode_for(kind, domain, domain_id, gen, file);
    ++it->second.nlookup;
    return it->first;
}

fuse_ino_t Filesystem::listed_inode(Kind kind, const std::string& domain, std::int64_t domain_id, std::int64_t gen,
                                    int file)
{
    auto it = inode_for(kind, domain, domain_id, gen, file);
    if (it->second.nlookup == 0) {
        m_listed.emplace_back(it->first, PinClock::now());
    }
    return it->first;
}

void Filesystem::free_node(std::map<fuse_ino_t, Node>::iterator it)
{
    const Node& node = it->second;
    auto key =
        m_inode_of.find(std::make_tuple(static_cast<int>(node.kind), node.domain, node.domain_id, node.gen, node.file));
    if (key != m_inode_of.end() && key->second == it->first) {
        m_inode_of.erase(key);
    }
    const std::pair<std::string, std::int64_t> content_key{node.domain, node.gen};
    const bool had_content = node.content != nullptr;
    m_nodes.erase(it); // the content goes with the last node that holds it, unless it is current
    if (had_content) {
        auto c = m_content.find(content_key);
        if (c != m_content.end() && c->second.expired()) {
            m_content.erase(c);
        }
    }
}

void Filesystem::collect(PinTime now)
{
    std::lock_guard lock(m_mutex);
    while (!m_listed.empty() && now - m_listed.front().second >= k_listed_grace) {
        auto it = m_nodes.find(m_listed.front().first);
        m_listed.pop_front();
        // A lookup may have taken it since (it lives until forgotten), or a FORGET freed it.
        if (it != m_nodes.end() && it->second.nlookup == 0) {
            free_node(it);
        }
    }
    std::erase_if(m_tgid_of, [&](const auto& t) { return now - t.second.second > m_options.pin_window; });
    // Content a read still held when its last inode went.
    std::erase_if(m_content, [](const auto& c) { return c.second.expired(); });
}

Filesystem::TreeCounts Filesystem::tree_counts() const
{
    std::lock_guard lock(m_mutex);
    std::size_t contents = 0;
    for (const auto& [key, content] : m_content) {
        contents += content.expired() ? 0 : 1;
    }
    return TreeCounts{m_nodes.size(), contents, m_tgid_of.size()};
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
        auto c = m_content.find({domain, gen});
        if (c != m_content.end()) {
            content = c->second.lock();
        }
    }
    if (!content) {
        // Not held by any inode: loaded again (an archived generation, or one the kernel forgot).
        ASSIGN_OR_RETURN(content, load_content(domain, gen));
    }
    std::lock_guard lock(m_mutex);
    // Another lookup may have loaded it meanwhile: the inodes of a generation share one copy.
    std::weak_ptr<const Content>& shared = m_content[{domain, gen}];
    if (auto earlier = shared.lock()) {
        content = std::move(earlier);
    } else {
        shared = content;
    }
    auto d = m_domains.find(domain);
    if (d != m_domains.end() && d->second.current == gen) {
        d->second.current_content = content;
    }
    fuse_ino_t ino = referenced_inode(Kind::file, domain, domain_id, gen, file);
    Node& node = m_nodes.at(ino);
    node.content = content;
    bool secret = k_files[static_cast<std::size_t>(file)].is_private;
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
    const auto tid = static_cast<std::uint32_t>(fuse_req_ctx(req)->pid);
    const std::uint32_t pid = process_of(tid);
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
            choice = d->second.pins->choose(pid, tid, t);
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

DomainPins* Filesystem::pins_of(const std::string& domain, std::int64_t domain_id)
{
    auto d = m_domains.find(domain);
    return d != m_domains.end() && d->second.id == domain_id ? d->second.pins.get() : nullptr;
}

void Filesystem::answered(fuse_req_t req, const std::string& domain, std::int64_t domain_id, std::int64_t gen)
{
    {
        std::lock_guard lock(m_mutex);
        if (pins_of(domain, domain_id) == nullptr) {
            return; // steady state: nothing to tell
        }
    }
    // Outside the lock: process_of may read /proc.
    const auto tid = static_cast<std::uint32_t>(fuse_req_ctx(req)->pid);
    const std::uint32_t pid = process_of(tid);
    std::lock_guard lock(m_mutex);
    if (DomainPins* pins = pins_of(domain, domain_id)) {
        pins->answered(pid, tid, gen, PinClock::now());
    }
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
    case Kind::live:
        return resolve_in_live(req, name);
    case Kind::archive: {
        std::lock_guard lock(m_mutex);
        auto d = m_domains.find(name);
        if (d == m_domains.end() || d->second.generations.empty()) {
            return Status::NotFound(name);
        }
        return Entry{referenced_inode(Kind::archive_domain, name, d->second.id, 0, -1), k_long_timeout};
    }
    case Kind::live_domain:
        return resolve_in_live_domain(req, dir, name);
    case Kind::archive_gen: {
        auto file = file_index(name);
        if (!file) {
            return Status::NotFound(name);
        }
        return file_entry(dir.domain, dir.domain_id, dir.gen, static_cast<int>(*file));
    }
    case Kind::archive_domain:
        return resolve_in_archive_domain(dir, name);
    case Kind::file:
        return Status::NotFound(name);
    }
    return Status::NotFound(name);
}

Result<Filesystem::Entry> Filesystem::resolve_in_live(fuse_req_t req, const char* name)
{
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
    Entry entry;
    {
        std::lock_guard lock(m_mutex);
        entry = Entry{referenced_inode(Kind::live_domain, name, domain_id, chosen.gen, -1),
                      chosen.cacheable ? k_long_timeout : 0.0};
    }
    answered(req, name, domain_id, chosen.gen);
    return entry;
}

Result<Filesystem::Entry> Filesystem::resolve_in_live_domain(fuse_req_t req, const Node& dir, const char* name)
{
    auto found = file_index(name);
    if (!found) {
        return Status::NotFound(name);
    }
    const int file = static_cast<int>(*found);
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
    // Loading a generation's content may wait for the store: that wait is the process's time on
    // the domain (answered()).
    if (serves) {
        ASSIGN_OR_RETURN(Entry entry, file_entry(dir.domain, dir.domain_id, dir.gen, file));
        entry.timeout = live_file_timeout();
        answered(req, dir.domain, dir.domain_id, dir.gen);
        return entry;
    }
    ASSIGN_OR_RETURN(Choice chosen, generation_for(req, dir.domain, dir.domain_id));
    ASSIGN_OR_RETURN(Entry entry, file_entry(dir.domain, dir.domain_id, chosen.gen, file));
    entry.timeout = 0.0;
    answered(req, dir.domain, dir.domain_id, chosen.gen);
    return entry;
}

Result<Filesystem::Entry> Filesystem::resolve_in_archive_domain(const Node& dir, const char* name)
{
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
    return Entry{referenced_inode(Kind::archive_gen, dir.domain, dir.domain_id, *gen, -1), k_long_timeout};
}

void Filesystem::init(fuse_conn_info* conn)
{
    // readdirplus would create dentries behind the transition logic's back.
    conn->want &= ~FUSE_CAP_READDIRPLUS;
    m_no_open = (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) != 0;
}

Result<fuse_entry_param> Filesystem::do_lookup(fuse_req_t req, fuse_ino_t parent, const char* name)
{
    // resolve() took the kernel's reference, in the critical section that found the inode.
    ASSIGN_OR_RETURN(Entry entry, resolve(req, parent, name));
    fuse_entry_param e{};
    {
        std::lock_guard lock(m_mutex);
        e.attr = attributes(entry.ino, m_nodes.at(entry.ino));
    }
    e.ino = entry.ino;
    e.attr_timeout = k_long_timeout;
    e.entry_timeout = entry.timeout;
    return e;
}

void Filesystem::forget(fuse_ino_t ino, std::uint64_t nlookup)
{
    std::lock_guard lock(m_mutex);
    auto it = m_nodes.find(ino);
    if (it == m_nodes.end() || ino == k_root || ino == k_live || ino == k_archive) {
        return; // the fixed directories live as long as the mount
    }
    it->second.nlookup -= std::min(it->second.nlookup, nlookup);
    if (it->second.nlookup == 0) {
        free_node(it);
    }
}

struct stat Filesystem::attributes(fuse_ino_t ino, const Node& node) const
{
    struct stat st {};
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
        bool archived = node.kind == Kind::archive_domain || node.kind == Kind::archive_gen;
        st.st_mode = S_IFDIR | (archived ? node.mode : 0755);
        st.st_uid = node.uid;
        st.st_gid = node.gid;
        st.st_nlink = 2;
    }
    st.st_atim = st.st_mtim = st.st_ctim = t;
    return st;
}

Result<struct stat> Filesystem::do_getattr(fuse_ino_t ino)
{
    std::lock_guard lock(m_mutex);
    auto it = m_nodes.find(ino);
    if (it == m_nodes.end()) {
        return Status::NotFound("no inode " + std::to_string(ino));
    }
    return attributes(ino, it->second);
}

Result<Filesystem::OpenAnswer> Filesystem::do_open(fuse_ino_t ino)
{
    {
        std::lock_guard lock(m_mutex);
        auto it = m_nodes.find(ino);
        if (it == m_nodes.end()) {
            return Status::NotFound("no inode " + std::to_string(ino));
        }
        if (it->second.kind != Kind::file) {
            return OpenAnswer::not_a_file;
        }
    }
    return m_no_open ? OpenAnswer::kernel_opens : OpenAnswer::open;
}

Result<Filesystem::Bytes> Filesystem::do_read(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off)
{
    Bytes bytes;
    struct Read {
        std::string domain;
        std::int64_t domain_id = 0;
        std::int64_t gen = 0;
    };
    std::optional<Read> pinned; // what is read, when its domain is in transition
    {
        std::lock_guard lock(m_mutex);
        auto it = m_nodes.find(ino);
        if (it == m_nodes.end()) {
            return Status::NotFound("no inode " + std::to_string(ino));
        }
        if (!it->second.content) {
            return Status::IoError("inode " + std::to_string(ino) + " has no content");
        }
        bytes.data = it->second.content->files[static_cast<std::size_t>(it->second.file)];
        if (pins_of(it->second.domain, it->second.domain_id) != nullptr) {
            pinned = Read{it->second.domain, it->second.domain_id, it->second.gen};
        }
    }
    // A read the page cache did not answer, in a transition: the process reads this generation.
    if (pinned) {
        answered(req, pinned->domain, pinned->domain_id, pinned->gen);
    }
    bytes.offset = static_cast<std::size_t>(std::max<off_t>(off, 0));
    if (bytes.offset < bytes.data->size()) {
        bytes.size = std::min(size, bytes.data->size() - bytes.offset);
    }
    return bytes;
}

Result<Filesystem::Listing> Filesystem::do_readdir(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off)
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
            return Status::NotFound("no inode " + std::to_string(ino));
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
                    items.push_back({name, listed_inode(Kind::live_domain, name, view.id, *view.current, -1), S_IFDIR});
                }
            }
            break;
        case Kind::archive:
            for (const auto& [name, view] : m_domains) {
                if (!view.generations.empty()) {
                    items.push_back({name, listed_inode(Kind::archive_domain, name, view.id, 0, -1), S_IFDIR});
                }
            }
            break;
        case Kind::live_domain:
        case Kind::archive_gen: {
            auto d = m_domains.find(dir.domain);
            if (d == m_domains.end() || d->second.id != dir.domain_id) {
                break;
            }
            for (std::size_t f = 0; f < k_file_count; ++f) {
                items.push_back({k_files[f].name,
                                 listed_inode(Kind::file, dir.domain, dir.domain_id, dir.gen, static_cast<int>(f)),
                                 S_IFREG});
            }
            break;
        }
        case Kind::archive_domain: {
            auto d = m_domains.find(dir.domain);
            if (d != m_domains.end()) {
                for (const auto& [gen, at] : d->second.generations) {
                    items.push_back({std::to_string(gen),
                                     listed_inode(Kind::archive_gen, dir.domain, dir.domain_id, gen, -1), S_IFDIR});
                }
            }
            break;
        }
        case Kind::file:
            return Listing{false, {}};
        }
    }
    Listing listing;
    listing.entries.resize(size);
    std::size_t used = 0;
    for (auto i = static_cast<std::size_t>(std::max<off_t>(off, 0)); i < items.size(); ++i) {
        struct stat st {};
        st.st_ino = items[i].ino;
        st.st_mode = items[i].type;
        std::size_t n = fuse_add_direntry(req, listing.entries.data() + used, size - used, items[i].name.c_str(), &st,
                                          static_cast<off_t>(i + 1));
        if (n > size - used) {
            break;
        }
        used += n;
    }
    listing.entries.resize(used);
    return listing;
}

Result<std::optional<std::string>> Filesystem::do_getxattr(fuse_ino_t ino, const char* name)
{
    std::lock_guard lock(m_mutex);
    auto it = m_nodes.find(ino);
    if (it == m_nodes.end()) {
        return Status::NotFound("no inode " + std::to_string(ino));
    }
    const Node& node = it->second;
    if (node.kind != Kind::live_domain || std::strcmp(name, store::k_generation_xattr) != 0) {
        return std::optional<std::string>();
    }
    // The domain's, not this directory's generation: a directory held on an older one still
    // tells what new opens get.
    auto d = m_domains.find(node.domain);
    std::optional<std::int64_t> gen;
    if (d != m_domains.end() && d->second.id == node.domain_id) {
        gen = visible_of(d->second);
    }
    if (!gen) {
        return Status::NotFound("no domain " + node.domain);
    }
    return std::optional<std::string>(std::to_string(*gen));
}

Result<std::string> Filesystem::do_listxattr(fuse_ino_t ino)
{
    std::lock_guard lock(m_mutex);
    auto it = m_nodes.find(ino);
    if (it == m_nodes.end()) {
        return Status::NotFound("no inode " + std::to_string(ino));
    }
    if (it->second.kind != Kind::live_domain) {
        return std::string();
    }
    return std::string(store::k_generation_xattr, sizeof store::k_generation_xattr); // with its NUL
}

} // namespace certfs::fs
