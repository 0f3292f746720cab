#include "sandbox/agent_client.h"

#include <sys/socket.h>

#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "devices/vsock/vsock_device.h"
#include "vmm/base/errors.h"
#include "vmm/base/log.h"

namespace vessel::sandbox {
namespace {

// One attempt: a socketpair whose far end the vsock device splices to guest port 1024.
absl::StatusOr<ScopedFd> ConnectOnce(vsock::VsockDevice& vsock, absl::Duration patience) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return ErrnoStatus("socketpair for the agent connection");
  }
  ScopedFd ours(fds[0]);
  ScopedFd theirs(fds[1]);
  auto promise = std::make_shared<std::promise<absl::Status>>();
  std::future<absl::Status> result = promise->get_future();
  VESSEL_RETURN_IF_ERROR(vsock.ConnectToGuest(
      std::move(theirs), kAgentVsockPort,
      [promise](absl::StatusOr<uint32_t> port) { promise->set_value(port.status()); }));
  if (result.wait_for(absl::ToChronoMilliseconds(patience)) != std::future_status::ready) {
    return absl::DeadlineExceededError("no answer from the guest to a vsock connection request");
  }
  VESSEL_RETURN_IF_ERROR(result.get());
  return ours;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AgentClient>> ConnectAgent(
    boost::asio::io_context& io, vsock::VsockDevice& vsock, absl::Time deadline,
    const std::function<std::optional<std::string>()>& vm_ended) {
  absl::Status last = absl::UnavailableError("not tried");
  int attempts = 0;
  while (absl::Now() < deadline) {
    if (std::optional<std::string> why = vm_ended(); why.has_value()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the VM ended before its agent answered: ", *why));
    }
    ++attempts;
    absl::Duration left = deadline - absl::Now();
    absl::StatusOr<ScopedFd> fd = ConnectOnce(vsock, std::min(left, absl::Seconds(30)));
    if (fd.ok()) {
      absl::StatusOr<std::shared_ptr<ttrpc::Client>> client =
          ttrpc::Client::Create(io, std::move(*fd), "vessel-agent");
      if (!client.ok()) return client.status();
      auto agent = std::make_unique<AgentClient>(std::move(*client));
      absl::StatusOr<agent::v1::VersionResponse> version = agent->Call<agent::v1::VersionResponse>(
          "Version", agent::v1::VersionRequest(), std::min(deadline - absl::Now(), absl::Seconds(30)));
      if (version.ok()) {
        if (version->protocol_version() != agent::v1::PROTOCOL_VERSION_CURRENT) {
          return absl::FailedPreconditionError(absl::StrCat(
              "the guest agent speaks protocol ", version->protocol_version(), " but this host speaks ",
              static_cast<int>(agent::v1::PROTOCOL_VERSION_CURRENT),
              ": rebuild the initramfs with this tree's vessel-agent (./setup.sh)"));
        }
        LogInfo("sandbox: agent ", version->agent_version(), " answered after ", attempts,
                " connection attempt(s)");
        return agent;
      }
      last = version.status();
    } else {
      last = fd.status();
    }
    // The driver is not up yet, nothing listens on 1024 yet, or the guest is slow to answer.
    std::this_thread::sleep_for(std::chrono::milliseconds(attempts < 50 ? 100 : 500));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("the guest agent did not answer on vsock port ", kAgentVsockPort, " (last error: ",
                   last.message(), ")"));
}

}  // namespace vessel::sandbox
