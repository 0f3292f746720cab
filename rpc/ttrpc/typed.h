// Protobuf-typed wrappers over the byte-level Client and Server: serialize, parse, and turn a
// payload that does not parse into InvalidArgument (server side) or DataLoss (client side).
#ifndef VESSEL_RPC_TTRPC_TYPED_H_
#define VESSEL_RPC_TTRPC_TYPED_H_

#include <functional>
#include <optional>
#include <string>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "rpc/ttrpc/client.h"
#include "rpc/ttrpc/server.h"

namespace vessel::ttrpc {

namespace internal {

template <typename Message>
absl::StatusOr<Message> ParseAs(const std::string& bytes, absl::string_view what, absl::StatusCode code) {
  Message m;
  if (!m.ParseFromString(bytes)) {
    return absl::Status(code, absl::StrCat("ttrpc payload of ", what, " does not parse as ",
                                           Message::descriptor()->full_name()));
  }
  return m;
}

// The call's request as a Req, or nullopt after answering InvalidArgument.
template <typename Req>
std::optional<Req> ParseRequest(const ServerCall& call) {
  const CallContext& ctx = call.context();
  absl::StatusOr<Req> req = ParseAs<Req>(call.payload(), absl::StrCat(ctx.service, "/", ctx.method),
                                         absl::StatusCode::kInvalidArgument);
  if (!req.ok()) {
    call.Reply(req.status());
    return std::nullopt;
  }
  return std::move(*req);
}

template <typename Resp>
absl::StatusOr<std::string> Serialize(const absl::StatusOr<Resp>& response) {
  if (!response.ok()) return response.status();
  return response->SerializeAsString();
}

}  // namespace internal

// Answers one typed call; copyable, first Reply wins (see ServerCall).
template <typename Resp>
class TypedReply {
 public:
  explicit TypedReply(ServerCall call) : call_(std::move(call)) {}
  void operator()(const absl::StatusOr<Resp>& response) const {
    call_.Reply(internal::Serialize(response));
  }
  const CallContext& context() const { return call_.context(); }

 private:
  ServerCall call_;
};

// A handler that answers at once, on the io thread: it must not block.
template <typename Req, typename Resp>
absl::Status RegisterUnary(Server& server, absl::string_view service, absl::string_view method,
                           std::function<absl::StatusOr<Resp>(const CallContext&, const Req&)> fn) {
  return server.Register(service, method, [fn = std::move(fn)](ServerCall call) {
    if (std::optional<Req> req = internal::ParseRequest<Req>(call)) {
      call.Reply(internal::Serialize(fn(call.context(), *req)));
    }
  });
}

// A handler that may block: it runs on `pool`, one pool thread per call in progress. Blocking
// handlers should watch ctx.cancelled() (deadline passed, connection gone).
template <typename Req, typename Resp>
absl::Status RegisterBlocking(Server& server, boost::asio::thread_pool& pool, absl::string_view service,
                              absl::string_view method,
                              std::function<absl::StatusOr<Resp>(const CallContext&, const Req&)> fn) {
  return server.Register(service, method, [fn = std::move(fn), &pool](ServerCall call) {
    boost::asio::post(pool, [fn, call = std::move(call)] {
      if (std::optional<Req> req = internal::ParseRequest<Req>(call)) {
        call.Reply(internal::Serialize(fn(call.context(), *req)));
      }
    });
  });
}

// A handler that answers later (Wait for an exit, an OOM event): it keeps `reply` and calls it
// from whichever thread learns the answer. Runs on the io thread: must not block.
template <typename Req, typename Resp>
absl::Status RegisterAsync(Server& server, absl::string_view service, absl::string_view method,
                           std::function<void(const CallContext&, const Req&, TypedReply<Resp>)> fn) {
  return server.Register(service, method, [fn = std::move(fn)](ServerCall call) {
    if (std::optional<Req> req = internal::ParseRequest<Req>(call)) {
      fn(call.context(), *req, TypedReply<Resp>(call));
    }
  });
}

// Blocking typed call (not from the client's own io thread).
template <typename Resp, typename Req>
absl::StatusOr<Resp> CallTyped(Client& client, absl::string_view service, absl::string_view method,
                               const Req& request, const CallOptions& options = {}) {
  absl::StatusOr<std::string> bytes = client.Call(service, method, request.SerializeAsString(), options);
  if (!bytes.ok()) return bytes.status();
  return internal::ParseAs<Resp>(*bytes, absl::StrCat(service, "/", method, " response"),
                                 absl::StatusCode::kDataLoss);
}

// Asynchronous typed call; `done` runs on the client's strand.
template <typename Resp, typename Req>
uint32_t StartTypedCall(Client& client, absl::string_view service, absl::string_view method,
                        const Req& request, const CallOptions& options,
                        absl::AnyInvocable<void(absl::StatusOr<Resp>)> done) {
  return client.StartCall(
      service, method, request.SerializeAsString(), options,
      [done = std::move(done), what = absl::StrCat(service, "/", method, " response")](
          absl::StatusOr<std::string> bytes) mutable {
        if (!bytes.ok()) {
          done(bytes.status());
          return;
        }
        done(internal::ParseAs<Resp>(*bytes, what, absl::StatusCode::kDataLoss));
      });
}

}  // namespace vessel::ttrpc

#endif  // VESSEL_RPC_TTRPC_TYPED_H_
