#include "renew/acme_issuer.hpp"
#include "renew/context.hpp"
#include "renew/helper.hpp"
#include "renew/issuer.hpp"
#include "renew/local_ca.hpp"

namespace certfs::renew {

Result<Issued> Issuer::poll(const IssueRequest& /*request*/, const std::string& /*cookie*/)
{
    return Status::Corrupt("a request is pending at an issuer that never leaves one pending");
}

Result<std::optional<RenewalWindow>> Issuer::renewal_info(const store::Generation& /*current*/)
{
    return std::optional<RenewalWindow>();
}

IssuerFactory builtin_issuers(std::shared_ptr<RenewContext> context)
{
    return [context = std::move(context)](store::Store& store,
                                          const store::Issuer& issuer) -> Result<std::unique_ptr<Issuer>> {
        if (issuer.kind == "local") {
            ASSIGN_OR_RETURN(auto ca, LocalCa::load(store, issuer));
            return std::unique_ptr<Issuer>(std::move(ca));
        }
        if (issuer.kind == "acme") {
            ASSIGN_OR_RETURN(auto acme, AcmeIssuer::load(store, issuer, context));
            return std::unique_ptr<Issuer>(std::move(acme));
        }
        if (issuer.kind == "helper") {
            ASSIGN_OR_RETURN(auto helper, HelperIssuer::load(store, issuer));
            return std::unique_ptr<Issuer>(std::move(helper));
        }
        return Status::Invalid("issuer " + issuer.name + " is of kind '" + issuer.kind +
                               "', which this version of certfs cannot issue with");
    };
}

IssuerFactory or_builtin_issuers(IssuerFactory issuers)
{
    return issuers ? std::move(issuers) : builtin_issuers(std::make_shared<RenewContext>());
}

Result<std::unique_ptr<Issuer>> load_issuer(store::Store& store, std::string_view name, const IssuerFactory& issuers)
{
    ASSIGN_OR_RETURN(store::Issuer issuer, store.get_issuer(name));
    return issuers ? issuers(store, issuer) : or_builtin_issuers({})(store, issuer);
}

} // namespace certfs::renew
