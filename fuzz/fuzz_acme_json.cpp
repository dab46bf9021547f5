// An ACME server's answer: the HTTP status, a Retry-After and a Link header, and the JSON
// body, cut at "\n====\n". The body is read as a problem document (with subproblems), as
// renewal information, and as the issuer's stored settings.
#include <charconv>

#include <nlohmann/json.hpp>

#include "fuzz/support.hpp"
#include "renew/acme_client.hpp"
#include "renew/acme_http.hpp"
#include "renew/acme_issuer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace certfs;
    using namespace certfs::renew;
    const auto parts = fuzz::fields(fuzz::as_text(data, size), 4);
    long status = 0;
    std::from_chars(parts[0].data(), parts[0].data() + parts[0].size(), status);
    const TimePoint now = from_unix(1749945600);

    acme::HttpResponse response;
    response.status = status;
    response.headers.emplace("retry-after", std::string(parts[1]));
    response.headers.emplace("link", std::string(parts[2]));
    response.body = std::string(parts[3]);

    const auto retry_after = acme::parse_retry_after(response.header("retry-after"), now);
    if (retry_after) {
        fuzz::require(*retry_after >= Duration::zero(), "a Retry-After is never negative");
    }
    (void)acme::link_urls(response, "up");
    (void)acme::link_urls(response, "alternate");

    const auto body = nlohmann::json::parse(response.body, nullptr, false);
    (void)acme::problem_status(body, status, "POST https://ca.example/acme/order/1", retry_after);
    if (auto window = parse_renewal_window(body); window.ok()) {
        fuzz::require(window->start <= window->end, "a renewal window does not end before it starts");
    }
    (void)parse_acme_config(response.body);
    return 0;
}
