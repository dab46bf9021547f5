// The certfs filesystem: the store seen through libfuse's low-level API.
//
//   /live/<name>/{cert,chain,fullchain,privkey,combined}.pem   the current generation
//   /archive/<name>/<gen>/{...same five files...}              every generation, immutable
//
// One inode per (domain, generation, file), never reused within a mount, so an open file
// descriptor reads one generation for its whole life and the page cache can be kept. An inode
// lives while the kernel holds it (its lookup count, until FORGET brings it to 0; an open file
// holds one) and then is freed with what only it held; a later lookup of the same file gets a
// new number, with the same bytes. A generation's content is loaded from the store when one of
// its files is looked up, held by those files' inodes (and, for the current generation, by the
// domain's view), and freed, the key's bytes overwritten, when the last of them goes. The
// directory live/<name> is one inode per generation too: a lookup of <name> names one
// generation's directory, which serves that generation for as long as a process may be held on
// it (DomainView::retired), so everything opened through one directory descriptor, below one
// working directory or through a bind mount of it comes from one generation until then; after
// that it follows the domain as a path from the top does. Which generation a lookup of <name>
// returns is decided by DomainPins (pins.hpp). The Watcher (watcher.hpp) follows the store,
// starts transitions and drops the kernel's entries; request handlers never call notify
// functions (that can deadlock).
//
// Thread-safety: handlers run on libfuse's worker threads, the watcher on its own; all shared
// state is guarded as written beside it, and the lock order is written at the mutexes. No
// handler replies while it holds a lock, and no exception leaves a handler or the watcher.
#pragma once

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include <sys/stat.h>

#include <array>
#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "fs/files.hpp"
#include "fs/pins.hpp"
#include "store/store.hpp"

namespace certfs::fs {

inline constexpr Duration k_default_pin_window = std::chrono::seconds(2);
// A commit drops the kernel's entry for live/<name> at once and again this much later (at most a
// quarter of the window), and flips one window after the second drop (see Watcher::refresh()).
inline constexpr PinDuration k_max_redrop_delay = std::chrono::milliseconds(100);
// How long the kernel may keep a file entry below live/<name>/ (at most --max-hold): a directory
// that no longer serves its generation follows the current one within this.
inline constexpr Duration k_live_file_timeout = std::chrono::seconds(60);
// How long an inode that a listing made (readdir) waits for a lookup before it is freed: the
// number readdir gave is the one a lookup right after it (ls -l, find) gets.
inline constexpr Duration k_listed_grace = std::chrono::seconds(60);

// Readers held on an older generation since the mount (pins.hpp): what the metrics show.
struct HoldCounts {
    std::uint64_t held = 0;           // processes held for a window or longer
    std::uint64_t moved_at_bound = 0; // of those, moved at the bound rather than at a pause
};

struct Options {
    std::string db_path;
    std::shared_ptr<const store::StoreKey> store_key; // opens the keys it serves (store_key.hpp)
    Duration pin_window = k_default_pin_window;
    Duration max_hold = k_default_max_hold;                  // the bound on a hold (pins.hpp)
    Duration poll_interval = std::chrono::milliseconds(100); // how often the watcher looks
    // Mount option hide_archive: archive/<name>/ and its generations' directories take the
    // domain's key owner and group, with r-x for each class the key's mode lets read
    // (archive_dir_mode()), so that only who may read the key may enter them. Off: 0755.
    bool hide_archive = false;
    std::function<void()> on_store_change; // called by the watcher after it saw a change
};

class Watcher;

// The mode of a directory below archive/ under hide_archive, from the mode of its domain's key:
// r-x for owner, group and others as the key is readable by each (0640 gives 0550).
constexpr std::uint32_t archive_dir_mode(std::uint32_t key_mode)
{
    std::uint32_t mode = 0;
    for (std::uint32_t shift : {6U, 3U, 0U}) {
        if ((key_mode & (04U << shift)) != 0) {
            mode |= 05U << shift;
        }
    }
    return mode;
}

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

    // The generation of domain `name` that a process with no pin gets when it opens a file of
    // live/<name>/ now: DomainPins::visible() during a transition, the current one otherwise.
    // nullopt when the filesystem shows no such domain (the watcher has not seen it yet, or it is
    // gone). What the daemon's deploy hooks wait on (renew/flip.hpp), and what live/<name>/'s
    // store::k_generation_xattr attribute says. Thread-safe: takes m_mutex, briefly.
    std::optional<std::int64_t> visible_generation(const std::string& name);

    // What the tree holds now, for the tests of its memory: inodes (the three fixed ones
    // included), generations whose content is loaded, and threads whose process is cached.
    struct TreeCounts {
        std::size_t nodes = 0;
        std::size_t contents = 0;
        std::size_t threads = 0;
    };
    TreeCounts tree_counts() const;

    // Frees what nobody refers to any more: inodes a listing made that no lookup took within
    // k_listed_grace of `now`, and cached processes of threads unused for a window. The watcher
    // calls it at every poll.
    void collect(PinTime now);

    // The requests, called by the op_* functions in filesystem.cpp, which reply exactly once with
    // what these return (an error Status through to_errno()) and catch what they throw. None of
    // them replies, so none replies while it holds a lock.
    void init(fuse_conn_info* conn);
    Result<fuse_entry_param> do_lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
    void forget(fuse_ino_t ino, std::uint64_t nlookup);
    Result<struct stat> do_getattr(fuse_ino_t ino);
    // What an open of a read-only open answers, when no error Status does.
    enum class OpenAnswer {
        open,         // open it, and keep the page cache
        kernel_opens, // the kernel opens by itself from now on: ENOSYS, no round trip per open
        not_a_file,   // EISDIR
    };
    Result<OpenAnswer> do_open(fuse_ino_t ino);
    // Bytes [offset, offset + size) of *data.
    struct Bytes {
        std::shared_ptr<const std::string> data;
        std::size_t offset = 0;
        std::size_t size = 0;
    };
    Result<Bytes> do_read(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off);
    // The entries from offset `off` that fit in `size` bytes, as fuse_add_direntry() wrote them.
    struct Listing {
        bool is_directory = true; // false: ENOTDIR
        std::vector<char> entries;
    };
    Result<Listing> do_readdir(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off);
    // Extended attributes. live/<name>/ has one, store::k_generation_xattr: visible_generation()
    // in decimal, the domain's whichever generation's directory ino is. Nothing else has any.
    // nullopt: ino has no attribute `name` (ENODATA).
    Result<std::optional<std::string>> do_getxattr(fuse_ino_t ino, const char* name);
    // The names of ino's attributes, each followed by a NUL.
    Result<std::string> do_listxattr(fuse_ino_t ino);

private:
    friend class Watcher; // it follows the store into the tree below, under the locks written there

    enum class Kind { root, live, archive, live_domain, archive_domain, archive_gen, file };
    static constexpr fuse_ino_t k_root = FUSE_ROOT_ID;
    static constexpr fuse_ino_t k_live = 2;
    static constexpr fuse_ino_t k_archive = 3;

    // One generation's five files. The private ones overwrite their bytes when freed.
    struct Content {
        std::int64_t gen = 0;
        std::array<std::shared_ptr<const std::string>, k_file_count> files; // in k_files' order
        TimePoint created_at;
    };

    struct Node {
        Kind kind = Kind::root;
        std::string domain;
        std::int64_t domain_id = 0;
        std::int64_t gen = 0;
        int file = -1;                          // the index in k_files, for files
        std::uint64_t nlookup = 0;              // the kernel's references: lookups not yet forgotten
        std::shared_ptr<const Content> content; // files only
        // Private files: the domain's key owner, group and mode. Directories below archive/
        // under hide_archive: the same, the mode as archive_dir_mode() makes it.
        std::uint32_t uid = 0, gid = 0, mode = 0;
    };

    // A domain as the watcher last read it from the store, and its transition.
    struct DomainView {
        std::int64_t id = 0;
        std::optional<std::int64_t> current;
        std::optional<TimePoint> current_not_after;
        std::vector<std::pair<std::int64_t, TimePoint>> generations;
        std::uint32_t uid = 0, gid = 0, mode = 0600;
        std::int64_t move_now_count = 0;  // store::Domain::move_now_count when last seen
        std::unique_ptr<DomainPins> pins; // set while in transition
        std::optional<PinTime> redrop;    // when the second drop of a commit is due
        // Generations no longer current whose live/<name> directory still serves them, until
        // when: as long as a process may be held on them. Then it serves the current one.
        std::map<std::int64_t, PinTime> retired;
        // The current generation's content once a file of it was looked up, kept while it is
        // current, so that the kernel dropping its inodes costs no reload.
        std::shared_ptr<const Content> current_content;
    };

    // What a lookup answers: an inode and how long the kernel may keep the entry, in seconds.
    struct Entry {
        fuse_ino_t ino = 0;
        double timeout = 0;
    };

    Filesystem(Options options, std::unique_ptr<store::Store> store);

    double live_file_timeout() const;
    // Drops the kernel's entry `name` in directory `parent`; the watcher's only, with no lock held.
    // Nothing to drop before start().
    static void drop_entry(fuse_session* session, fuse_ino_t parent, const std::string& name);
    // Drops the kernel's cached attributes of inode `ino`; the same rules.
    static void drop_attributes(fuse_session* session, fuse_ino_t ino);
    // Logs what a choice of the pins reports about a process (resolve(), no lock held).
    void report(const std::string& domain, std::uint32_t pid, const DomainPins::Choice& choice);
    Result<std::shared_ptr<const Content>> load_content(const std::string& domain, std::int64_t gen);

    // The entry `name` in directory `parent`, one function per kind of directory that has entries
    // not known in advance. No lock held on entry.
    Result<Entry> resolve(fuse_req_t req, fuse_ino_t parent, const char* name);
    Result<Entry> resolve_in_live(fuse_req_t req, const char* name);
    Result<Entry> resolve_in_live_domain(fuse_req_t req, const Node& dir, const char* name);
    Result<Entry> resolve_in_archive_domain(const Node& dir, const char* name);
    // The generation of domain `name` the process of req gets now, and whether the kernel may
    // cache that answer: the current one in steady state, DomainPins' choice in a transition.
    struct Choice {
        std::int64_t gen = 0;
        bool cacheable = true;
    };
    Result<Choice> generation_for(fuse_req_t req, const std::string& name, std::int64_t domain_id);
    // Tells the pins of a domain in transition that the process of req was answered about its
    // generation `gen` just now (DomainPins::answered()). No lock held on entry.
    void answered(fuse_req_t req, const std::string& domain, std::int64_t domain_id, std::int64_t gen);
    // The pins of `domain` (of id domain_id) while it is in transition, else null. m_mutex held.
    DomainPins* pins_of(const std::string& domain, std::int64_t domain_id);
    Result<Entry> file_entry(const std::string& domain, std::int64_t domain_id, std::int64_t gen, int file);
    // visible_generation() of a domain (m_mutex held).
    static std::optional<std::int64_t> visible_of(DomainView& view);
    // The inode of (kind, domain, gen, file), made when there is none (m_mutex held). A lookup
    // takes a reference on it in the same critical section (referenced_inode()), so that no
    // FORGET or collect() frees it before the reply; a listing does not (listed_inode()): the
    // kernel takes no reference from readdir, so collect() frees what no lookup took.
    std::map<fuse_ino_t, Node>::iterator inode_for(Kind kind, const std::string& domain, std::int64_t domain_id,
                                                   std::int64_t gen, int file);
    fuse_ino_t referenced_inode(Kind kind, const std::string& domain, std::int64_t domain_id, std::int64_t gen,
                                int file);
    fuse_ino_t listed_inode(Kind kind, const std::string& domain, std::int64_t domain_id, std::int64_t gen, int file);
    // Frees the node and what only it held (m_mutex held).
    void free_node(std::map<fuse_ino_t, Node>::iterator it);
    struct stat attributes(fuse_ino_t ino, const Node& node) const;
    std::uint32_t process_of(std::uint32_t tid);

    const Options m_options;
    const TimePoint m_mounted_at;
    std::atomic<bool> m_no_open{false};              // kernel supports opens without a round trip; set in init
    std::atomic<bool> m_unknown_process_said{false}; // process_of() warned once

    // Lock order: m_store_mutex before m_mutex, never the reverse (today no code holds both at
    // once). The watcher's own mutex (Watcher::m_mutex) is taken with neither held, and neither
    // is taken while it is held. No fuse_reply_* and no fuse_lowlevel_notify_* runs while any of
    // them is held.
    //
    // m_store_mutex guards the store's connection, used by the handlers (load_content()) and the
    // watcher, and what the watcher reads with it (Watcher::m_session, Watcher::m_data_version).
    std::mutex m_store_mutex;
    std::unique_ptr<store::Store> m_store; // guarded by m_store_mutex

    // m_mutex guards the tree: the domains as last read (written by the watcher, read by the
    // handlers), the inodes and their content, the process cache and the counts.
    mutable std::mutex m_mutex;
    std::map<std::string, DomainView> m_domains; // guarded by m_mutex
    // Inodes are keyed by (kind, name, domain id, generation, file) and content by (name,
    // generation): SQLite gives a new domain the id of the last one removed, so an id alone may
    // name two domains, while a name's generation numbers only grow, also across remove and add
    // again, so (name, generation) names one generation for ever. Guarded by m_mutex.
    std::map<std::tuple<int, std::string, std::int64_t, std::int64_t, int>, fuse_ino_t> m_inode_of;
    std::map<fuse_ino_t, Node> m_nodes; // guarded by m_mutex
    fuse_ino_t m_next_ino = 4;          // only grows: numbers are never reused; guarded by m_mutex
    // The content each generation's inodes share, while some inode holds it. Guarded by m_mutex.
    std::map<std::pair<std::string, std::int64_t>, std::weak_ptr<const Content>> m_content;
    // Inodes made by a listing, with when, in that order: collect() frees those no lookup took.
    std::deque<std::pair<fuse_ino_t, PinTime>> m_listed; // guarded by m_mutex
    // tid -> (pid, last use); an entry unused for a window is read again, and collect() drops
    // it. Guarded by m_mutex.
    std::map<std::uint32_t, std::pair<std::uint32_t, PinTime>> m_tgid_of;
    HoldCounts m_holds; // guarded by m_mutex

    std::unique_ptr<Watcher> m_watcher; // made in the constructor, its thread started by start()
};

} // namespace certfs::fs
