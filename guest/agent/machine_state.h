// Machine-wide guest state the host resets after restoring a VM from a snapshot/template (issue
// 14: every VM restored from one template must be its own machine): the kernel's random pool
// (ReseedRandomDev) and the real-time clock (SetGuestDateTime). No agent state; host mode keeps
// the host's clock untouched and never credits entropy to the host's pool (agent.proto).
#ifndef VESSEL_GUEST_AGENT_MACHINE_STATE_H_
#define VESSEL_GUEST_AGENT_MACHINE_STATE_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vessel/agent/v1/agent.pb.h"

namespace vessel::agent {

// The most bytes one ReseedRandomDev takes (a 256-bit pool needs 32; more is harmless).
inline constexpr size_t kMaxReseedBytes = 4096;
// The latest CLOCK_REALTIME second Linux accepts (TIME_SETTOD_SEC_MAX - 1: KTIME_SEC_MAX less
// 30 years of uptime room), early 2232.
inline constexpr int64_t kMaxSettableSec = 8277292035;

// RNDADDENTROPY of req.data (credited 8 bits a byte; 0 in host mode), then RNDRESEEDCRNG.
absl::StatusOr<v1::ReseedRandomDevResponse> ReseedRandomDev(const v1::ReseedRandomDevRequest& req,
                                                            bool host_mode);
// clock_settime(CLOCK_REALTIME); in host mode validates and logs only.
absl::Status SetGuestDateTime(const v1::SetGuestDateTimeRequest& req, bool host_mode);

}  // namespace vessel::agent

#endif  // VESSEL_GUEST_AGENT_MACHINE_STATE_H_
