// `certfsctl check`: everything that can be wrong with a store, one line per problem.
#pragma once

#include <string>
#include <vector>

#include "store/store.hpp"

namespace certfs::renew {

// Problems found: SQLite integrity and foreign keys; domains without a certificate; a current
// generation that no longer validates (expired, names changed...); certificates inside their
// renew window that were not renewed; duplicate (issuer, serial) pairs; renewals whose lease
// expired or that sit in state `issuing` without a lease. Empty when all is well.
Result<std::vector<std::string>> check_store(store::Store& store);

} // namespace certfs::renew
