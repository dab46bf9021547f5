// The head of a request to the built-in http-01 responder, as any client on the network may
// send it.
#include <algorithm>
#include <cctype>

#include "fuzz/support.hpp"
#include "renew/acme_challenge.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace certfs;
    const auto request = renew::acme::parse_http01_request(fuzz::as_text(data, size));
    fuzz::require(request.status == 200 || request.status == 400 || request.status == 404 || request.status == 405,
                  "the responder answers 200, 400, 404 or 405");
    fuzz::require((request.status == 200) == !request.token.empty(), "a token exactly when the status is 200");
    fuzz::require(std::all_of(request.token.begin(), request.token.end(),
                              [](unsigned char c) { return std::isalnum(c) != 0 || c == '-' || c == '_'; }),
                  "a token is base64url");
    return 0;
}
