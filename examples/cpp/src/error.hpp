// The one user-error type: what went wrong, why, how to fix it; printed as one line, exit 1.
// Same wording rules as coatnet_deploy.errors.UserError ("what: why. Fix.").
#pragma once

#include <stdexcept>
#include <string>

namespace coatnet {

class UserError : public std::runtime_error {
 public:
  UserError(const std::string& what, const std::string& why = "", const std::string& fix = "")
      : std::runtime_error(format(what, why, fix)) {}

 private:
  static std::string strip_dot(std::string s) {
    while (!s.empty() && s.back() == '.') s.pop_back();
    return s;
  }
  static std::string format(const std::string& what, const std::string& why, const std::string& fix) {
    std::string out = strip_dot(what);
    if (!why.empty()) out += ": " + strip_dot(why);
    if (!fix.empty()) {
      std::string f = strip_dot(fix);
      if (!f.empty() && f[0] >= 'a' && f[0] <= 'z') f[0] = static_cast<char>(f[0] - 'a' + 'A');
      out += ". " + f;
    }
    // A message must stay one line whatever a library put into it.
    for (char& c : out)
      if (c == '\n' || c == '\r') c = ' ';
    return out + ".";
  }
};

// Exit codes, as coatnet-deploy's (docs: shared/design/CONTRACT.md).
constexpr int EXIT_OK = 0;
constexpr int EXIT_USER = 1;
constexpr int EXIT_GATE_FAILED = 2;
// Anything that is not a UserError is a bug in this program.
constexpr int EXIT_BUG = 70;

}  // namespace coatnet
