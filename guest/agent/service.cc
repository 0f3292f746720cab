#include "guest/agent/service.h"

#include <unistd.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/empty.pb.h"
#include "guest/agent/fs_util.h"
#include "guest/agent/machine_state.h"
#include "rpc/ttrpc/typed.h"
#include "vmm/base/errors.h"

namespace vessel::agent {
namespace {

using google::protobuf::Empty;
using ttrpc::CallContext;

template <typename Req>
std::function<absl::StatusOr<Empty>(const CallContext&, const Req&)> ToEmpty(
    absl::Status (Agent::*method)(const Req&), Agent& agent) {
  return [method, &agent](const CallContext&, const Req& req) -> absl::StatusOr<Empty> {
    VESSEL_RETURN_IF_ERROR((agent.*method)(req));
    return Empty();
  };
}

// "Key:   123 kB" from smaps_rollup, in bytes; false when the line is missing.
bool SmapsField(absl::string_view text, absl::string_view key, uint64_t* bytes) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::ConsumePrefix(&line, key) || !absl::ConsumePrefix(&line, ":")) continue;
    line = absl::StripAsciiWhitespace(line);
    if (!absl::ConsumeSuffix(&line, "kB")) return false;
    uint64_t kib = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &kib)) return false;
    *bytes = kib * 1024;
    return true;
  }
  return false;
}

}  // namespace

AgentRss ReadAgentRss() {
  AgentRss rss;
  // smaps_rollup walks the page tables: exact. statm's counters are per-thread
  // caches on Linux 6.1 (synced every 64 faults of each thread) and can be far
  // behind.
  if (absl::StatusOr<std::string> rollup = ReadSmallFile("/proc/self/smaps_rollup"); rollup.ok()) {
    uint64_t total = 0, anon = 0;
    if (SmapsField(*rollup, "Rss", &total) && SmapsField(*rollup, "Anonymous", &anon)) {
      rss.total = total;
      rss.file = total > anon ? total - anon : 0;
      return rss;
    }
  }
  // statm: size resident shared text lib data dt (pages).
  absl::StatusOr<std::string> statm = ReadSmallFile("/proc/self/statm");
  if (!statm.ok()) return rss;
  std::vector<absl::string_view> fields = absl::StrSplit(*statm, ' ');
  uint64_t resident = 0, shared = 0;
  if (fields.size() < 3 || !absl::SimpleAtoi(fields[1], &resident) ||
      !absl::SimpleAtoi(fields[2], &shared)) {
    return rss;
  }
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  rss.total = resident * page;
  rss.file = shared * page;
  return rss;
}

absl::Status RegisterAgentService(ttrpc::Server& server, boost::asio::thread_pool& pool,
                                  Agent& agent) {
  const char* s = kAgentService;
  VESSEL_RETURN_IF_ERROR((ttrpc::RegisterBlocking<v1::CreateSandboxRequest, Empty>(
      server, pool, s, "CreateSandbox", ToEmpty(&Agent::CreateSandbox, agent))));
  VESSEL_RETURN_IF_ERROR((ttrpc::RegisterBlocking<v1::DestroySandboxRequest, Empty>(
      server, pool, s, "DestroySandbox",
      [&agent](const CallContext&, const v1::DestroySandboxRequest& req) -> absl::StatusOr<Empty> {
        VESSEL_RETURN_IF_ERROR(agent.DestroySandbox(req));
        if (agent.options().on_sandbox_destroyed) agent.options().on_sandbox_destroyed();
        return Empty();
      })));
  VESSEL_RETURN_IF_ERROR(
      (ttrpc::RegisterBlocking<v1::CreateContainerRequest, v1::CreateContainerResponse>(
          server, pool, s, "CreateContainer",
          [&agent](const CallContext&, const v1::CreateContainerRequest& req) {
            return agent.CreateContainer(req);
          })));
  VESSEL_RETURN_IF_ERROR((ttrpc::RegisterBlocking<v1::StartContainerRequest, Empty>(
      server, pool, s, "StartContainer", ToEmpty(&Agent::StartContainer, agent))));
  VESSEL_RETURN_IF_ERROR((ttrpc::RegisterBlocking<v1::ExecProcessRequest, v1::ExecProcessResponse>(
      server, pool, s, "ExecProcess",
      [&agent](const CallContext&, const v1::ExecProcessRequest& req) {
        return agent.ExecProcess(req);
      })));
  VESSEL_RETURN_IF_ERROR((ttrpc::RegisterAsync<v1::WaitProcessRequest, v1::WaitProcessResponse>(
      server, s, "WaitProcess",
      [&agent](const CallContext&, const v1::WaitProcessRequest& req,
               ttrpc::TypedReply<v1::WaitProcessResponse> reply) {
        agent.WaitProcess(req, std::move(reply));
      })));
  VESSEL_RETURN_IF_ERROR((ttrpc::RegisterUnary<v1::SignalProcessRequest, Empty>(
      server, s, "SignalProcess", ToEmpty(&Agent::SignalProcess, agent))));
  VESSEL_RETURN_IF_ERROR((ttrpc::RegisterBlocking<v1::RemoveContainerRequest, Empty>(
      server, pool, s, "RemoveContainer", ToEmpty(&Agent::RemoveContainer, agent))));
  VESSEL_RETURN_IF_ERROR((ttrpc::RegisterUnary<v1::ResizeTtyRequest, Empty>(
      server, s, "ResizeTty", ToEmpty(&Agent::ResizeTty, agent))));
  VESSEL_RETURN_IF_ERROR((ttrpc::RegisterUnary<v1::CloseStdinRequest, Empty>(
      server, s, "CloseStdin", ToEmpty(&Agent::CloseStdin, agent))));
  VESSEL_RETURN_IF_ERROR(
      (ttrpc::RegisterBlocking<v1::StatsContainerRequest, v1::StatsContainerResponse>(
          server, pool, s, "StatsContainer",
          [&agent](const CallContext&, const v1::StatsContainerRequest& req) {
            return agent.StatsContainer(req);
          })));
  VESSEL_RETURN_IF_ERROR((ttrpc::RegisterAsync<v1::GetOOMEventRequest, v1::OOMEvent>(
      server, s, "GetOOMEvent",
      [&agent](const CallContext&, const v1::GetOOMEventRequest&,
               ttrpc::TypedReply<v1::OOMEvent> reply) { agent.GetOOMEvent(std::move(reply)); })));
  VESSEL_RETURN_IF_ERROR((ttrpc::RegisterUnary<v1::HealthRequest, v1::HealthResponse>(
      server, s, "Health",
      [](const CallContext&, const v1::HealthRequest&) -> absl::StatusOr<v1::HealthResponse> {
        v1::HealthResponse resp;
        resp.set_status(v1::HealthResponse::SERVING_STATUS_SERVING);
        AgentRss rss = ReadAgentRss();
        resp.set_agent_rss_bytes(rss.total);
        resp.set_agent_rss_file_bytes(rss.file);
        return resp;
      })));
  VESSEL_RETURN_IF_ERROR((ttrpc::RegisterUnary<v1::VersionRequest, v1::VersionResponse>(
      server, s, "Version",
      [](const CallContext&, const v1::VersionRequest&) -> absl::StatusOr<v1::VersionResponse> {
        v1::VersionResponse resp;
        resp.set_agent_version(kAgentVersion);
        resp.set_protocol_version(v1::PROTOCOL_VERSION_CURRENT);
        return resp;
      })));
  // The pool: RNDADDENTROPY hashes up to 4 KiB in the (possibly emulated) guest kernel.
  VESSEL_RETURN_IF_ERROR(
      (ttrpc::RegisterBlocking<v1::ReseedRandomDevRequest, v1::ReseedRandomDevResponse>(
          server, pool, s, "ReseedRandomDev",
          [&agent](const CallContext&, const v1::ReseedRandomDevRequest& req) {
            return ReseedRandomDev(req, agent.options().host_mode);
          })));
  VESSEL_RETURN_IF_ERROR((ttrpc::RegisterUnary<v1::SetGuestDateTimeRequest, Empty>(
      server, s, "SetGuestDateTime",
      [&agent](const CallContext&, const v1::SetGuestDateTimeRequest& req)
          -> absl::StatusOr<Empty> {
        VESSEL_RETURN_IF_ERROR(SetGuestDateTime(req, agent.options().host_mode));
        return Empty();
      })));
  return absl::OkStatus();
}

}  // namespace vessel::agent
