#include "devices/virtio/descriptor_chain.h"

#include <algorithm>
#include <bit>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "devices/virtio/virtio_ring.h"

namespace vessel::virtio {
namespace {

// The ring structs' fields are little-endian (virtio 1.x); vessel runs on x86_64 only.
static_assert(std::endian::native == std::endian::little);
static_assert(sizeof(vring_desc) == 16);

std::string Hex(uint64_t v) { return absl::StrFormat("%#x", v); }

std::vector<Descriptor> Filter(absl::Span<const Descriptor> descriptors, bool writable) {
  std::vector<Descriptor> out;
  for (const Descriptor& d : descriptors) {
    if (d.is_write == writable && d.len > 0) out.push_back(d);
  }
  return out;
}

uint64_t Sum(absl::Span<const Descriptor> descriptors) {
  uint64_t total = 0;
  for (const Descriptor& d : descriptors) total += d.len;
  return total;
}

}  // namespace

DescriptorChain::DescriptorChain(const GuestMemory& memory, uint64_t desc_table_gpa,
                                 uint16_t queue_size, uint16_t head_index)
    : memory_(&memory),
      desc_table_gpa_(desc_table_gpa),
      queue_size_(queue_size),
      head_(head_index) {
  Rewind();
}

void DescriptorChain::Rewind() {
  table_gpa_ = desc_table_gpa_;
  table_len_ = queue_size_;
  next_index_ = head_;
  visited_ = 0;
  in_indirect_ = false;
  seen_writable_ = false;
  done_ = false;
  error_ = absl::OkStatus();
}

absl::Status DescriptorChain::Error(uint32_t index, absl::string_view problem) const {
  return absl::InvalidArgumentError(absl::StrCat(
      "virtqueue chain with head ", head_, ": ",
      in_indirect_ ? "indirect table descriptor " : "descriptor ", index, ": ", problem));
}

absl::StatusOr<std::optional<Descriptor>> DescriptorChain::Next() {
  if (!error_.ok()) return error_;
  if (done_) return std::nullopt;
  // At most two passes: an indirect descriptor switches tables once (a second one is an error).
  for (;;) {
    const uint32_t index = next_index_;
    if (index >= table_len_) {
      // Only the head can get here (next indices are checked when read): Queue::Pop checks it too.
      error_ =
          Error(index, absl::StrCat("index out of range (table has ", table_len_, " entries)"));
      return error_;
    }
    absl::StatusOr<vring_desc> raw =
        memory_->ReadObj<vring_desc>(table_gpa_ + uint64_t{index} * sizeof(vring_desc));
    if (!raw.ok()) {
      error_ = Error(index, absl::StrCat("cannot read it: ", raw.status().message()));
      return error_;
    }
    ++visited_;
    const uint64_t addr = raw->addr;
    const uint32_t len = raw->len;
    const uint16_t flags = raw->flags;
    const uint16_t next = raw->next;

    if (flags & VRING_DESC_F_INDIRECT) {
      if (in_indirect_) {
        error_ = Error(index, "INDIRECT descriptor inside an indirect table (nesting not allowed)");
        return error_;
      }
      if (flags & VRING_DESC_F_NEXT) {
        error_ = Error(index, "INDIRECT descriptor also has the NEXT flag");
        return error_;
      }
      if (len == 0 || len % sizeof(vring_desc) != 0) {
        error_ = Error(index, absl::StrCat("indirect table length ", len,
                                           " is not a non-zero multiple of 16"));
        return error_;
      }
      if (len / sizeof(vring_desc) > kMaxIndirectEntries) {
        error_ = Error(index, absl::StrCat("indirect table of ", len / sizeof(vring_desc),
                                           " entries exceeds ", kMaxIndirectEntries));
        return error_;
      }
      if (!memory_->Contains(addr, len)) {
        error_ = Error(index, absl::StrCat("indirect table ", Hex(addr), "+", Hex(len),
                                           " is not in guest RAM"));
        return error_;
      }
      // The WRITE flag of an indirect descriptor is ignored (virtio 1.2 2.7.5.3.2).
      in_indirect_ = true;
      table_gpa_ = addr;
      table_len_ = len / sizeof(vring_desc);
      next_index_ = 0;
      visited_ = 0;
      continue;
    }

    if (addr + len < addr) {
      error_ = Error(index, absl::StrCat("buffer ", Hex(addr), "+", Hex(len),
                                         " wraps around the address space"));
      return error_;
    }
    if (!memory_->Contains(addr, len)) {
      error_ =
          Error(index, absl::StrCat("buffer ", Hex(addr), "+", Hex(len), " is not in guest RAM"));
      return error_;
    }
    const bool is_write = (flags & VRING_DESC_F_WRITE) != 0;
    if (!is_write && seen_writable_) {
      error_ = Error(index, "device-readable buffer after a device-writable one");
      return error_;
    }
    seen_writable_ = seen_writable_ || is_write;
    if (flags & VRING_DESC_F_NEXT) {
      if (next >= table_len_) {
        error_ = Error(index, absl::StrCat("next index ", next, " out of range (table has ",
                                           table_len_, " entries)"));
        return error_;
      }
      if (visited_ >= table_len_) {
        error_ = Error(index, absl::StrCat("chain goes on past ", table_len_,
                                           " descriptors, the table's size (a loop?)"));
        return error_;
      }
      next_index_ = next;
    } else {
      done_ = true;
    }
    return Descriptor{addr, len, is_write};
  }
}

absl::StatusOr<std::vector<Descriptor>> DescriptorChain::Collect() const {
  DescriptorChain walk = *this;
  walk.Rewind();
  std::vector<Descriptor> out;
  for (;;) {
    absl::StatusOr<std::optional<Descriptor>> d = walk.Next();
    if (!d.ok()) return d.status();
    if (!d->has_value()) return out;
    out.push_back(**d);
  }
}

absl::StatusOr<uint64_t> DescriptorChain::ReadableBytes() const {
  absl::StatusOr<std::vector<Descriptor>> all = Collect();
  if (!all.ok()) return all.status();
  return virtio::ReadableBytes(*all);
}

absl::StatusOr<uint64_t> DescriptorChain::WritableBytes() const {
  absl::StatusOr<std::vector<Descriptor>> all = Collect();
  if (!all.ok()) return all.status();
  return virtio::WritableBytes(*all);
}

uint64_t ReadableBytes(absl::Span<const Descriptor> descriptors) {
  uint64_t total = 0;
  for (const Descriptor& d : descriptors) total += d.is_write ? 0 : d.len;
  return total;
}

uint64_t WritableBytes(absl::Span<const Descriptor> descriptors) {
  uint64_t total = 0;
  for (const Descriptor& d : descriptors) total += d.is_write ? d.len : 0;
  return total;
}

// ChainReader

ChainReader::ChainReader(const GuestMemory& memory, absl::Span<const Descriptor> descriptors)
    : memory_(&memory),
      buffers_(Filter(descriptors, /*writable=*/false)),
      remaining_(Sum(buffers_)) {}

absl::StatusOr<ChainReader> ChainReader::Create(const GuestMemory& memory,
                                                const DescriptorChain& chain) {
  absl::StatusOr<std::vector<Descriptor>> all = chain.Collect();
  if (!all.ok()) return all.status();
  return ChainReader(memory, *all);
}

absl::Status ChainReader::Read(void* dst, uint64_t len) { return Advance(dst, len); }

absl::Status ChainReader::Skip(uint64_t len) { return Advance(nullptr, len); }

absl::Status ChainReader::Advance(void* dst, uint64_t len) {
  if (len > remaining_) {
    return absl::OutOfRangeError(absl::StrCat("virtqueue chain: ", len, " bytes wanted but only ",
                                              remaining_, " device-readable bytes remain"));
  }
  uint8_t* out = static_cast<uint8_t*>(dst);
  while (len > 0) {
    const Descriptor& b = buffers_[index_];
    const uint64_t n = std::min<uint64_t>(len, b.len - offset_);
    if (out != nullptr) {
      absl::Status s = memory_->Read(b.addr + offset_, out, n);
      if (!s.ok()) return s;
      out += n;
    }
    offset_ += n;
    len -= n;
    remaining_ -= n;
    consumed_ += n;
    if (offset_ == b.len) {
      ++index_;
      offset_ = 0;
    }
  }
  return absl::OkStatus();
}

// ChainWriter

ChainWriter::ChainWriter(GuestMemory& memory, absl::Span<const Descriptor> descriptors)
    : memory_(&memory),
      buffers_(Filter(descriptors, /*writable=*/true)),
      remaining_(Sum(buffers_)) {}

absl::StatusOr<ChainWriter> ChainWriter::Create(GuestMemory& memory, const DescriptorChain& chain) {
  absl::StatusOr<std::vector<Descriptor>> all = chain.Collect();
  if (!all.ok()) return all.status();
  return ChainWriter(memory, *all);
}

absl::Status ChainWriter::Write(const void* src, uint64_t len) {
  if (len > remaining_) {
    return absl::OutOfRangeError(absl::StrCat("virtqueue chain: ", len, " bytes to write but only ",
                                              remaining_, " device-writable bytes remain"));
  }
  const uint8_t* in = static_cast<const uint8_t*>(src);
  while (len > 0) {
    const Descriptor& b = buffers_[index_];
    const uint64_t n = std::min<uint64_t>(len, b.len - offset_);
    absl::Status s = memory_->Write(b.addr + offset_, in, n);
    if (!s.ok()) return s;
    in += n;
    offset_ += n;
    len -= n;
    remaining_ -= n;
    written_ += n;
    if (offset_ == b.len) {
      ++index_;
      offset_ = 0;
    }
  }
  return absl::OkStatus();
}

}  // namespace vessel::virtio
