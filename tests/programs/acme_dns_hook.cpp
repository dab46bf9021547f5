// A dns-01 hook for the tests (renew/acme_challenge.hpp has the contract), backed by
// pebble-challtestsrv's management API:
//     acme_dns_hook MANAGEMENT_URL LOG_FILE set|clear _acme-challenge.NAME. VALUE
// Every call is appended to LOG_FILE as "set|clear NAME VALUE" before it acts. challtestsrv's
// /set-txt adds a value and /clear-txt drops every value of a host, so "clear" drops the host and
// sets again the values the log shows still set: it removes only the value it is given, as the
// contract asks. Exit 0 on success; 1 with one line on stderr otherwise; 2 for bad arguments.
#include <curl/curl.h>

#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

// POSTs `body` to URL; true on HTTP 200. `error` says why not.
bool post(const std::string& url, const std::string& body, std::string& error)
{
    CURL* curl = curl_easy_init();
    if (curl == nullptr) {
        error = "cannot start libcurl";
        return false;
    }
    curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(
        curl, CURLOPT_WRITEFUNCTION, +[](char*, size_t size, size_t n, void*) { return size * n; });
    CURLcode rc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (rc != CURLE_OK) {
        error = "POST " + url + ": " + curl_easy_strerror(rc);
        return false;
    }
    if (status != 200) {
        error = "POST " + url + ": HTTP status " + std::to_string(status);
        return false;
    }
    return true;
}

// The values of `host` that the log shows set and not cleared since.
std::vector<std::string> values_still_set(const std::string& log, const std::string& host)
{
    std::vector<std::string> values;
    std::ifstream in(log);
    for (std::string line; std::getline(in, line);) {
        std::istringstream words(line);
        std::string action;
        std::string name;
        std::string value;
        words >> action >> name >> value;
        if (name != host) {
            continue;
        }
        if (action == "set") {
            values.push_back(value);
        } else if (action == "clear") {
            for (auto it = values.begin(); it != values.end(); ++it) {
                if (*it == value) {
                    values.erase(it);
                    break;
                }
            }
        }
    }
    return values;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 6 || (std::string(argv[3]) != "set" && std::string(argv[3]) != "clear")) {
        std::cerr << "usage: acme_dns_hook MANAGEMENT_URL LOG_FILE set|clear NAME VALUE\n";
        return 2;
    }
    const std::string base = argv[1];
    const std::string log = argv[2];
    const std::string action = argv[3];
    const std::string host = argv[4];
    const std::string value = argv[5];
    {
        std::ofstream out(log, std::ios::app);
        out << action << ' ' << host << ' ' << value << '\n';
        if (!out.flush()) {
            std::cerr << "acme_dns_hook: cannot write " << log << '\n';
            return 1;
        }
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    std::string error;
    bool ok = true;
    if (action == "set") {
        ok = post(base + "/set-txt", nlohmann::json{{"host", host}, {"value", value}}.dump(), error);
    } else {
        ok = post(base + "/clear-txt", nlohmann::json{{"host", host}}.dump(), error);
        for (const auto& other : values_still_set(log, host)) {
            ok = ok && post(base + "/set-txt", nlohmann::json{{"host", host}, {"value", other}}.dump(), error);
        }
    }
    curl_global_cleanup();
    if (!ok) {
        std::cerr << "acme_dns_hook: " << error << '\n';
        return 1;
    }
    return 0;
}
