// AgentClient: the typed host side of `vessel.agent.v1.Agent` over one ttrpc connection, and
// ConnectAgent, which reaches the agent through the VM's vsock device in process (no socket file).
#ifndef VESSEL_SANDBOX_AGENT_CLIENT_H_
#define VESSEL_SANDBOX_AGENT_CLIENT_H_

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/empty.pb.h"
#include "rpc/ttrpc/client.h"
#include "rpc/ttrpc/typed.h"
#include "vessel/agent/v1/agent.pb.h"

namespace vessel::vsock {
class VsockDevice;
}

namespace vessel::sandbox {

inline constexpr uint32_t kAgentVsockPort = 1024;
inline constexpr char kAgentService[] = "vessel.agent.v1.Agent";

class AgentClient {
 public:
  explicit AgentClient(std::shared_ptr<ttrpc::Client> client) : client_(std::move(client)) {}
  ~AgentClient() { client_->Close(); }

  // A unary call with `timeout` (infinite: none). Errors carry the method's name.
  template <typename Resp, typename Req>
  absl::StatusOr<Resp> Call(const char* method, const Req& request,
                            absl::Duration timeout = absl::Seconds(60)) {
    ttrpc::CallOptions options;
    options.timeout = timeout;
    absl::StatusOr<Resp> r = ttrpc::CallTyped<Resp>(*client_, kAgentService, method, request, options);
    if (!r.ok()) {
      return absl::Status(r.status().code(), absl::StrCat("agent ", method, ": ", r.status().message()));
    }
    return r;
  }
  template <typename Req>
  absl::Status CallEmpty(const char* method, const Req& request,
                         absl::Duration timeout = absl::Seconds(60)) {
    return Call<google::protobuf::Empty>(method, request, timeout).status();
  }
  ttrpc::Client& raw() { return *client_; }
  void Close() { client_->Close(); }

 private:
  std::shared_ptr<ttrpc::Client> client_;
};

// Connects to the agent on vsock port 1024 of the VM behind `vsock` and checks its protocol
// version, retrying while the guest is still booting (driver not up yet, nothing listening, no
// answer) until `deadline`. `vm_ended` is polled between tries: when it returns a reason, give up
// at once with it.
absl::StatusOr<std::unique_ptr<AgentClient>> ConnectAgent(
    boost::asio::io_context& io, vsock::VsockDevice& vsock, absl::Time deadline,
    const std::function<std::optional<std::string>()>& vm_ended);

}  // namespace vessel::sandbox

#endif  // VESSEL_SANDBOX_AGENT_CLIENT_H_
