// Mail to local users through the host's sendmail (its MTA delivers).
#pragma once

#include <string>
#include <vector>

namespace ephemera::wirt {

// Runs `sendmail -oi -- RECIPIENT...` with the message on its stdin and
// waits for it (at most 30 s). kUnavailable if it cannot run or fails.
void SendMail(const std::string& sendmail, const std::vector<std::string>& recipients,
              const std::string& subject, const std::string& body);

// The message as sendmail reads it (headers, blank line, body).
std::string MailMessage(const std::vector<std::string>& recipients, const std::string& subject,
                        const std::string& body);

}  // namespace ephemera::wirt
