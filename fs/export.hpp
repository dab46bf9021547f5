// Exporting a generation to a plain directory, for hosts that cannot mount certfs.
//
// DIR becomes a symbolic link to an immutable directory `.<DIR name>.certfs/<gen>.<random>/`
// next to it, holding cert.pem, chain.pem, fullchain.pem, privkey.pem and combined.pem.
// A new export writes and fsyncs a complete new set, then replaces the link with one
// rename(2): at every instant DIR shows all of the old set or all of the new one. The
// previous set is kept (a reader may have resolved DIR just before the switch); older ones
// are deleted.
#pragma once

#include <filesystem>

#include "core/status.hpp"
#include "store/model.hpp"

namespace certfs::fs {

// Writes `gen` of `domain` to dir. privkey.pem and combined.pem get the domain's mode and
// (when running as root) its owner and group; the others 0644. Refuses (Invalid) a dir that
// exists and is neither a symbolic link made by a previous export nor an empty directory.
Status export_generation(const store::Domain& domain, const store::Generation& gen, const std::filesystem::path& dir);

} // namespace certfs::fs
