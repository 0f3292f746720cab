// The byte stream both ends of the e2e transfer tests agree on: a seeded xorshift64* sequence,
// and the FNV-1a 64 hash the receiving side reports. Header-only, no dependencies: the static guest
// probe and the host tests both include it.
#ifndef VESSEL_GUEST_TESTING_PROBE_STREAM_H_
#define VESSEL_GUEST_TESTING_PROBE_STREAM_H_

#include <cstddef>
#include <cstdint>

namespace vessel::probe {

class StreamGenerator {
 public:
  explicit StreamGenerator(uint64_t seed) : state_(seed ? seed : 0x9e3779b97f4a7c15ull) {}
  void Fill(uint8_t* out, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      if (avail_ == 0) {
        state_ ^= state_ >> 12;
        state_ ^= state_ << 25;
        state_ ^= state_ >> 27;
        word_ = state_ * 0x2545f4914f6cdd1dull;
        avail_ = 8;
      }
      out[i] = static_cast<uint8_t>(word_);
      word_ >>= 8;
      --avail_;
    }
  }

 private:
  uint64_t state_;
  uint64_t word_ = 0;
  int avail_ = 0;
};

class Fnv1a64 {
 public:
  void Update(const uint8_t* data, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      hash_ ^= data[i];
      hash_ *= 0x100000001b3ull;
    }
    bytes_ += n;
  }
  uint64_t hash() const { return hash_; }
  uint64_t bytes() const { return bytes_; }

 private:
  uint64_t hash_ = 0xcbf29ce484222325ull;
  uint64_t bytes_ = 0;
};

}  // namespace vessel::probe

#endif  // VESSEL_GUEST_TESTING_PROBE_STREAM_H_
