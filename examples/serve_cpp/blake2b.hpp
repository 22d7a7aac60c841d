// BLAKE2b (RFC 7693) with a personalisation string: the hash behind the contract's
// `@request_seed` input, which must equal Python's
//   int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8,
//                                  person=b"blendspec.seed").digest(), "little") >> 1
// so that a policy draws the same action here as in `blend run` and examples/serve.py.
// Unkeyed, sequential mode only (fanout 1, depth 1), which is what hashlib computes by default.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace blake2b {

namespace detail {

constexpr uint64_t kIv[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

constexpr uint8_t kSigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

inline uint64_t rotr(uint64_t x, int n) {
  return (x >> n) | (x << (64 - n));
}

inline uint64_t load64(const uint8_t* p) {
  uint64_t x = 0;
  for (int i = 7; i >= 0; --i) x = (x << 8) | p[i];  // little endian on any host
  return x;
}

inline void compress(uint64_t h[8], const uint8_t block[128], uint64_t counter, bool last) {
  uint64_t m[16], v[16];
  for (int i = 0; i < 16; ++i) m[i] = load64(block + 8 * i);
  for (int i = 0; i < 8; ++i) {
    v[i] = h[i];
    v[i + 8] = kIv[i];
  }
  v[12] ^= counter;  // the high 64 bits of the byte counter stay 0 below 2^64 bytes
  if (last) v[14] = ~v[14];
  auto g = [&](int a, int b, int c, int d, uint64_t x, uint64_t y) {
    v[a] = v[a] + v[b] + x;
    v[d] = rotr(v[d] ^ v[a], 32);
    v[c] = v[c] + v[d];
    v[b] = rotr(v[b] ^ v[c], 24);
    v[a] = v[a] + v[b] + y;
    v[d] = rotr(v[d] ^ v[a], 16);
    v[c] = v[c] + v[d];
    v[b] = rotr(v[b] ^ v[c], 63);
  };
  for (int r = 0; r < 12; ++r) {
    const uint8_t* s = kSigma[r];
    g(0, 4, 8, 12, m[s[0]], m[s[1]]);
    g(1, 5, 9, 13, m[s[2]], m[s[3]]);
    g(2, 6, 10, 14, m[s[4]], m[s[5]]);
    g(3, 7, 11, 15, m[s[6]], m[s[7]]);
    g(0, 5, 10, 15, m[s[8]], m[s[9]]);
    g(1, 6, 11, 12, m[s[10]], m[s[11]]);
    g(2, 7, 8, 13, m[s[12]], m[s[13]]);
    g(3, 4, 9, 14, m[s[14]], m[s[15]]);
  }
  for (int i = 0; i < 8; ++i) h[i] ^= v[i] ^ v[i + 8];
}

}  // namespace detail

// The digest (1..64 bytes) of `data`, with `person` (at most 16 bytes, zero-padded) in the
// parameter block, unkeyed and unsalted.
inline void hash(std::string_view data, std::string_view person, uint8_t* out, size_t digest_size) {
  uint8_t param[64] = {0};
  param[0] = uint8_t(digest_size);
  param[2] = 1;  // fanout
  param[3] = 1;  // depth
  std::memcpy(param + 48, person.data(), person.size() < 16 ? person.size() : 16);
  uint64_t h[8];
  for (int i = 0; i < 8; ++i) h[i] = detail::kIv[i] ^ detail::load64(param + 8 * i);
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  size_t left = data.size();
  uint64_t counter = 0;
  uint8_t block[128];
  while (left > 128) {  // every full block but the last one
    counter += 128;
    detail::compress(h, p, counter, false);
    p += 128;
    left -= 128;
  }
  std::memset(block, 0, sizeof block);
  std::memcpy(block, p, left);
  counter += left;
  detail::compress(h, block, counter, true);
  for (size_t i = 0; i < digest_size; ++i) out[i] = uint8_t(h[i / 8] >> (8 * (i % 8)));
}

// The contract's `@request_seed` for a request id (its UTF-8 bytes).
inline int64_t request_seed(std::string_view request_id) {
  uint8_t digest[8];
  hash(request_id, "blendspec.seed", digest, 8);
  uint64_t x = 0;
  for (int i = 7; i >= 0; --i) x = (x << 8) | digest[i];
  return int64_t(x >> 1);
}

}  // namespace blake2b
