#include "fs/files.hpp"

namespace certfs::fs {

std::string file_content(FileKind kind, const store::Generation& g)
{
    switch (kind) {
    case FileKind::cert:
        return g.cert_pem;
    case FileKind::chain:
        return g.chain_pem;
    case FileKind::fullchain:
        return g.fullchain_pem();
    case FileKind::privkey:
        return g.key_pem;
    case FileKind::combined:
        return g.combined_pem();
    }
    return {};
}

} // namespace certfs::fs
