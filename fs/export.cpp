#include "fs/export.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "core/handles.hpp"
#include "fs/files.hpp"

namespace certfs::fs {

namespace {

namespace stdfs = std::filesystem;

Status fsync_path(const stdfs::path& path)
{
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd || ::fsync(fd.get()) != 0) {
        return errno_status("cannot sync " + path.string());
    }
    return Status::Ok();
}

Status write_file(const stdfs::path& path, const std::string& content, mode_t mode, bool set_owner, uid_t uid,
                  gid_t gid)
{
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) {
        return errno_status("cannot create " + path.string());
    }
    std::size_t done = 0;
    while (done < content.size()) {
        ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return errno_status("cannot write " + path.string());
        }
        done += static_cast<std::size_t>(n);
    }
    // Ownership first, then the mode: the file is never more open than asked for.
    if (set_owner && ::fchown(fd.get(), uid, gid) != 0) {
        return errno_status("cannot set the owner of " + path.string());
    }
    if (::fchmod(fd.get(), mode) != 0 || ::fsync(fd.get()) != 0) {
        return errno_status("cannot finish " + path.string());
    }
    return Status::Ok();
}

} // namespace

Status export_generation(const store::Domain& domain, const store::Generation& gen, const stdfs::path& dir_arg)
{
    stdfs::path dir = stdfs::absolute(dir_arg).lexically_normal();
    if (dir.filename().empty()) {
        dir = dir.parent_path();
    }
    const stdfs::path parent = dir.parent_path();
    const std::string sets_name = "." + dir.filename().string() + ".certfs";
    const stdfs::path sets = parent / sets_name;

    std::error_code ec;
    auto status = stdfs::symlink_status(dir, ec);
    if (stdfs::is_symlink(status)) {
        auto target = stdfs::read_symlink(dir, ec);
        if (ec || target.parent_path() != sets_name) {
            return Status::Invalid("export: " + dir.string() + " is a symbolic link not made by certfsctl export");
        }
    } else if (stdfs::is_directory(status)) {
        if (!stdfs::is_empty(dir, ec) || ec) {
            return Status::Invalid("export: " + dir.string() +
                                   " is a directory that is not empty; export manages it as a link to its sets");
        }
    } else if (stdfs::exists(status)) {
        return Status::Invalid("export: " + dir.string() + " exists and is not a directory");
    }
    if (!stdfs::is_directory(parent, ec)) {
        return Status::NotFound("export: " + parent.string() + " does not exist");
    }
    if (::mkdir(sets.c_str(), 0755) != 0 && errno != EEXIST) {
        return errno_status("export: cannot create " + sets.string());
    }

    std::string templ = (sets / (std::to_string(gen.gen) + ".XXXXXX")).string();
    if (::mkdtemp(templ.data()) == nullptr) {
        return errno_status("export: cannot create a directory in " + sets.string());
    }
    const stdfs::path set_dir = templ;
    auto cleanup_on_error = [&](Status s) {
        stdfs::remove_all(set_dir, ec);
        return s;
    };
    ::chmod(set_dir.c_str(), 0755);
    const bool as_root = ::geteuid() == 0;
    for (const FileSpec& f : k_files) {
        const std::string content = file_content(f.kind, gen);
        Status s = f.is_private
                       ? write_file(set_dir / f.name, content, domain.mode, as_root, domain.owner_uid, domain.group_gid)
                       : write_file(set_dir / f.name, content, 0644, as_root, 0, 0);
        if (!s.ok()) {
            return cleanup_on_error(s);
        }
    }
    if (Status s = fsync_path(set_dir); !s.ok()) {
        return cleanup_on_error(s);
    }

    // An empty directory in the way is replaced by the link (rename cannot replace it).
    if (stdfs::is_directory(status) && !stdfs::is_symlink(status) && ::rmdir(dir.c_str()) != 0) {
        return cleanup_on_error(errno_status("export: cannot replace " + dir.string()));
    }
    const stdfs::path link_tmp = sets / ("link." + set_dir.filename().string());
    const stdfs::path link_target = stdfs::path(sets_name) / set_dir.filename();
    std::optional<stdfs::path> previous;
    if (stdfs::is_symlink(status)) {
        previous = stdfs::read_symlink(dir, ec).filename();
    }
    if (::symlink(link_target.c_str(), link_tmp.c_str()) != 0) {
        return cleanup_on_error(errno_status("export: cannot create a link in " + sets.string()));
    }
    if (::rename(link_tmp.c_str(), dir.c_str()) != 0) {
        Status s = errno_status("export: cannot switch " + dir.string());
        ::unlink(link_tmp.c_str());
        return cleanup_on_error(s);
    }
    TRY(fsync_path(parent));

    // Keep the new and the previous set; older sets have had a whole export to be let go.
    for (const auto& entry : stdfs::directory_iterator(sets, ec)) {
        auto name = entry.path().filename();
        if (name != set_dir.filename() && (!previous || name != *previous)) {
            stdfs::remove_all(entry.path(), ec);
        }
    }
    return Status::Ok();
}

} // namespace certfs::fs
