// The ops of inline::torch's compiled decode step (schemas in kernels.py): block_linear, decode_attention,
// add_rms_norm and silu_mul; and sample, for sampled decoding.
//
// block_linear: matmuls of float32 activations with weights in 32-weight blocks, as GGUF's Q4_1 and Q8_0 quantize
// them, for decode batches (a few rows). ATen's int4 kernel turns each weight into a float on AVX2, so it is bound
// by arithmetic, not by the bytes it reads; here activations are rounded to int8 per 32-block (as llama.cpp does)
// and the weights of eight output features are interleaved, so that one maddubs multiplies four inputs of all
// eight by one broadcast of four activations: each feature's sum stays in its own lane (no horizontal reduction),
// and each unpacked weight vector serves every activation row of the pass.
//
// Layout (kernels.interleave makes it from the row-per-feature blocks of kernels.q4_1_blocks/q8_0_blocks, keeping
// their [out, in / 32 * block bytes] shape): output features in groups of 8, one group after another (the last may
// be narrower: width w); a group holds, for each block of 32 inputs in turn:
//   q4_1, 20 w bytes: w float16 scales d, w float16 offsets m, then 4 chunks of 4 w bytes; byte 4 f + t of chunk c
//                     holds feature f's levels of inputs 4 c + t (low nibble) and 16 + 4 c + t (high nibble);
//                     weight = d * level + m, level in 0..15.
//   q8_0, 34 w bytes: w float16 scales d, then 8 chunks of 4 w bytes; byte 4 f + t of chunk c is feature f's int8
//                     level of input 4 c + t; weight = d * level.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

namespace {

constexpr int64_t kBlock = 32;
constexpr int64_t kQ4_1Bytes = 20;
constexpr int64_t kQ8_0Bytes = 34;

__m256 halves_to_floats(const uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

float horizontal_sum(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
  return _mm_cvtss_f32(sum);
}

int horizontal_sum(__m256i v) {
  __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  sum = _mm_add_epi32(sum, _mm_unpackhi_epi64(sum, sum));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 1));
  return _mm_cvtsi128_si32(sum);
}

// Activations rounded to int8 per 32-block: levels, scales, and (for q4_1's offsets) scale times the levels' sum.
struct QuantizedRows {
  int64_t blocks = 0;  // per row
  std::vector<int8_t> levels;
  std::vector<float> scale, scaled_sum;
};

void quantize_rows(const float* x, int64_t rows, int64_t in, QuantizedRows& q) {
  q.blocks = in / kBlock;
  const int64_t blocks = rows * q.blocks;
  q.levels.resize(rows * in);
  q.scale.resize(blocks);
  q.scaled_sum.resize(blocks);
  const __m256 magnitude_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  // packs interleaves the 128-bit lanes; this puts the 32 levels back in order.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b < blocks; ++b) {
    const float* v = x + b * kBlock;
    __m256 parts[4];
    for (int k = 0; k < 4; ++k) parts[k] = _mm256_loadu_ps(v + 8 * k);
    __m256 high = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(parts[0], magnitude_mask), _mm256_and_ps(parts[1], magnitude_mask)),
                                _mm256_max_ps(_mm256_and_ps(parts[2], magnitude_mask), _mm256_and_ps(parts[3], magnitude_mask)));
    __m128 max4 = _mm_max_ps(_mm256_castps256_ps128(high), _mm256_extractf128_ps(high, 1));
    max4 = _mm_max_ps(max4, _mm_movehl_ps(max4, max4));
    const float amax = _mm_cvtss_f32(_mm_max_ss(max4, _mm_movehdup_ps(max4)));
    const __m256 inverse = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    __m256i levels[4];
    // Rounded to nearest, ties to even (the default rounding mode), as nearbyint does.
    for (int k = 0; k < 4; ++k) levels[k] = _mm256_cvtps_epi32(_mm256_mul_ps(parts[k], inverse));
    const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(levels[0], levels[1]), _mm256_add_epi32(levels[2], levels[3]));
    const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(levels[0], levels[1]), _mm256_packs_epi32(levels[2], levels[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q.levels.data() + b * kBlock), _mm256_permutevar8x32_epi32(packed, order));
    const float d = amax / 127.0f;
    q.scale[b] = d;
    q.scaled_sum[b] = d * static_cast<float>(horizontal_sum(sum));
  }
}

constexpr int64_t kWidth = 8;                          // output features interleaved together
constexpr int64_t kQ4_1Group = kWidth * kQ4_1Bytes;    // bytes of a full group's block
constexpr int64_t kQ8_0Group = kWidth * kQ8_0Bytes;
constexpr int64_t kMaxRows = 8;  // activation rows one pass over a group serves (their sums live in registers)

// Four int8 activations in every 32-bit lane.
__m256i broadcast4(const int8_t* p) {
  int32_t four;
  std::memcpy(&four, p, 4);
  return _mm256_set1_epi32(four);
}

// Integer dot products of unsigned weight levels with int8 activations, 4 pairs per 32-bit lane. With VNNI (kernels.py
// adds its flag where the CPU has it) one instruction; without, maddubs's int16 pair sums, widened by madd.
//   add_small: acc += the products, for sums that fit int16 over a block (q4_1: at most 8 * 2 * 15 * 127 = 30480);
//   widen:     those sums as int32 lanes;
//   add:       acc (int32 lanes) += the products, for any levels.
#if defined(__AVXVNNI__) || (defined(__AVX512VNNI__) && defined(__AVX512VL__))
#if defined(__AVXVNNI__)
__m256i add(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_avx_epi32(acc, u, s); }
#else
__m256i add(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }
#endif
__m256i add_small(__m256i acc, __m256i u, __m256i s) { return add(acc, u, s); }
__m256i widen(__m256i acc) { return acc; }
#else
__m256i add_small(__m256i acc, __m256i u, __m256i s) { return _mm256_add_epi16(acc, _mm256_maddubs_epi16(u, s)); }
__m256i widen(__m256i acc) { return _mm256_madd_epi16(acc, _mm256_set1_epi16(1)); }
__m256i add(__m256i acc, __m256i u, __m256i s) { return _mm256_add_epi32(acc, widen(_mm256_maddubs_epi16(u, s))); }
#endif

// out[r * stride + f] = the dot product of feature f of a full q4_1 group with activation row first + r.
template <int Rows>
void q4_1_group(const uint8_t* group, const QuantizedRows& q, int64_t first, float* out, int64_t stride) {
  const int64_t n = q.blocks;
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const int8_t* act[Rows];
  __m256 acc[Rows];
  for (int r = 0; r < Rows; ++r) {
    act[r] = q.levels.data() + (first + r) * n * kBlock;
    acc[r] = _mm256_setzero_ps();
  }
  for (int64_t b = 0; b < n; ++b) {
    const uint8_t* block = group + b * kQ4_1Group;
    __m256i sums[Rows];
    for (int r = 0; r < Rows; ++r) sums[r] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2 * 2 * kWidth + 32 * c));
      const __m256i low = _mm256_and_si256(bytes, nibble);
      const __m256i high = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), nibble);
      for (int r = 0; r < Rows; ++r) {
        const int8_t* a = act[r] + b * kBlock + 4 * c;
        sums[r] = add_small(sums[r], low, broadcast4(a));
        sums[r] = add_small(sums[r], high, broadcast4(a + 16));
      }
    }
    const __m256 d = halves_to_floats(block), m = halves_to_floats(block + 2 * kWidth);
    for (int r = 0; r < Rows; ++r) {
      const int64_t i = (first + r) * n + b;
      const __m256 dots = _mm256_cvtepi32_ps(widen(sums[r]));
      acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(q.scale[i])), dots, acc[r]);
      acc[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(q.scaled_sum[i]), acc[r]);
    }
  }
  for (int r = 0; r < Rows; ++r) _mm256_storeu_ps(out + r * stride, acc[r]);
}

template <int Rows>
void q8_0_group(const uint8_t* group, const QuantizedRows& q, int64_t first, float* out, int64_t stride) {
  const int64_t n = q.blocks;
  const int8_t* act[Rows];
  __m256 acc[Rows];
  for (int r = 0; r < Rows; ++r) {
    act[r] = q.levels.data() + (first + r) * n * kBlock;
    acc[r] = _mm256_setzero_ps();
  }
  for (int64_t b = 0; b < n; ++b) {
    const uint8_t* block = group + b * kQ8_0Group;
    __m256i sums[Rows];
    for (int r = 0; r < Rows; ++r) sums[r] = _mm256_setzero_si256();
    for (int c = 0; c < 8; ++c) {
      const __m256i levels = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2 * kWidth + 32 * c));
      // maddubs takes one unsigned operand: the weight's sign moves onto the activation.
      const __m256i magnitudes = _mm256_sign_epi8(levels, levels);
      for (int r = 0; r < Rows; ++r) {
        const __m256i a = _mm256_sign_epi8(broadcast4(act[r] + b * kBlock + 4 * c), levels);
        sums[r] = add(sums[r], magnitudes, a);
      }
    }
    const __m256 d = halves_to_floats(block);
    for (int r = 0; r < Rows; ++r) {
      const __m256 scale = _mm256_mul_ps(d, _mm256_set1_ps(q.scale[(first + r) * n + b]));
      acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums[r]), acc[r]);
    }
  }
  for (int r = 0; r < Rows; ++r) _mm256_storeu_ps(out + r * stride, acc[r]);
}

using GroupKernel = void (*)(const uint8_t*, const QuantizedRows&, int64_t, float*, int64_t);

template <template <int> class Kernel, int... Rows>
constexpr std::array<GroupKernel, sizeof...(Rows)> by_rows(std::integer_sequence<int, Rows...>) {
  return {Kernel<Rows + 1>::run...};
}

template <int Rows> struct Q4_1 { static constexpr GroupKernel run = q4_1_group<Rows>; };
template <int Rows> struct Q8_0 { static constexpr GroupKernel run = q8_0_group<Rows>; };
constexpr auto kQ4_1Kernels = by_rows<Q4_1>(std::make_integer_sequence<int, kMaxRows>{});
constexpr auto kQ8_0Kernels = by_rows<Q8_0>(std::make_integer_sequence<int, kMaxRows>{});

// The last group, of width < 8, laid out as a full group whose missing features have zero weights.
std::vector<uint8_t> widen(const uint8_t* group, int64_t width, int64_t n, bool q4_1) {
  const int64_t bytes = q4_1 ? kQ4_1Bytes : kQ8_0Bytes, scales = q4_1 ? 2 : 1, chunks = q4_1 ? 4 : 8;
  std::vector<uint8_t> wide(n * kWidth * bytes, 0);
  for (int64_t b = 0; b < n; ++b) {
    const uint8_t* from = group + b * width * bytes;
    uint8_t* to = wide.data() + b * kWidth * bytes;
    for (int64_t s = 0; s < scales; ++s, from += 2 * width, to += 2 * kWidth) std::memcpy(to, from, 2 * width);
    for (int64_t c = 0; c < chunks; ++c) std::memcpy(to + 32 * c, from + 4 * width * c, 4 * width);
  }
  return wide;
}

// x: [rows, in] float32; blocks: [out, in / 32 * block bytes] uint8 in the interleaved layout above, its format
// told by the bytes per block.
at::Tensor block_linear(const at::Tensor& x, const at::Tensor& blocks) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "block_linear: x must be a 2-D float32 tensor");
  TORCH_CHECK(blocks.dim() == 2 && blocks.scalar_type() == at::kByte, "block_linear: blocks must be 2-D uint8");
  const int64_t rows = x.size(0), in = x.size(1), out_features = blocks.size(0);
  TORCH_CHECK(in % kBlock == 0, "block_linear: input features must be a multiple of 32");
  const int64_t n_blocks = in / kBlock, row_bytes = blocks.size(1);
  const bool q4_1 = row_bytes == n_blocks * kQ4_1Bytes;
  TORCH_CHECK(q4_1 || row_bytes == n_blocks * kQ8_0Bytes, "block_linear: ", row_bytes,
              " bytes per weight row fit neither q4_1 nor q8_0 blocks of ", in, " inputs");
  const at::Tensor input = x.contiguous();
  const at::Tensor weights = blocks.contiguous();
  at::Tensor out = at::empty({rows, out_features}, x.options());
  if (rows == 0 || out_features == 0) return out;
  const uint8_t* w = weights.data_ptr<uint8_t>();
  float* result = out.data_ptr<float>();
  QuantizedRows q;
  quantize_rows(input.data_ptr<float>(), rows, in, q);
  const auto& kernels = q4_1 ? kQ4_1Kernels : kQ8_0Kernels;
  const int64_t groups = (out_features + kWidth - 1) / kWidth;
  // Groups split between threads; each reads a group's weights once per kMaxRows activation rows.
  at::parallel_for(0, groups, 4, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      const int64_t width = std::min(kWidth, out_features - g * kWidth);
      const uint8_t* group = w + g * kWidth * row_bytes;
      std::vector<uint8_t> wide;
      if (width < kWidth) {
        wide = widen(group, width, n_blocks, q4_1);
        group = wide.data();
      }
      for (int64_t first = 0; first < rows; first += kMaxRows) {
        const int64_t count = std::min(kMaxRows, rows - first);
        float* target = result + first * out_features + g * kWidth;
        if (width == kWidth) {
          kernels[count - 1](group, q, first, target, out_features);
        } else {
          float narrow[kMaxRows * kWidth];
          kernels[count - 1](group, q, first, narrow, kWidth);
          for (int64_t r = 0; r < count; ++r) std::memcpy(target + r * out_features, narrow + r * kWidth, width * 4);
        }
      }
    }
  });
  return out;
}

// KV cache elements: float32, or float16 (as llama.cpp keeps them: half the bytes to read per step and to hold per
// cached token).
__m256 load8(const float* p) { return _mm256_loadu_ps(p); }
__m256 load8(const c10::Half* p) { return halves_to_floats(reinterpret_cast<const uint8_t*>(p)); }

void store(float* p, const float* x, int64_t n) { std::memcpy(p, x, n * sizeof(float)); }
void store(c10::Half* p, const float* x, int64_t n) {
  for (int64_t j = 0; j < n; j += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + j), _mm256_cvtps_ph(_mm256_loadu_ps(x + j), _MM_FROUND_TO_NEAREST_INT));
}

// Rotary embedding of one head: out[j] = x[j] * cos[j] + x[(j + half) % dim] * sin_signed[j] (rotate_half).
void rope(const float* x, const float* cos, const float* sin_signed, float* out, int64_t dim) {
  const int64_t half = dim / 2;
  for (int64_t j = 0; j < dim; ++j) out[j] = x[j] * cos[j] + x[(j + half) % dim] * sin_signed[j];
}

// Lane i of the result is the sum of the lanes of v[i].
__m256 sum_each(const __m256* v) {
  const __m256 a = _mm256_hadd_ps(v[0], v[1]), b = _mm256_hadd_ps(v[2], v[3]);
  const __m256 c = _mm256_hadd_ps(v[4], v[5]), d = _mm256_hadd_ps(v[6], v[7]);
  const __m256 low = _mm256_hadd_ps(a, b), high = _mm256_hadd_ps(c, d);
  return _mm256_add_ps(_mm256_permute2f128_ps(low, high, 0x20), _mm256_permute2f128_ps(low, high, 0x31));
}

// scores[t] = dot(query, key t) for t < length: eight keys at a time, their sums reduced together.
template <typename T>
void dot_keys(const float* query, const T* keys, int64_t position_stride, int64_t length, int64_t dim, float* scores) {
  int64_t t = 0;
  for (; t + 8 <= length; t += 8) {
    __m256 acc[8];
    for (int u = 0; u < 8; ++u) acc[u] = _mm256_setzero_ps();
    for (int64_t j = 0; j < dim; j += 8) {
      const __m256 q = _mm256_loadu_ps(query + j);
      for (int u = 0; u < 8; ++u) acc[u] = _mm256_fmadd_ps(q, load8(keys + (t + u) * position_stride + j), acc[u]);
    }
    _mm256_storeu_ps(scores + t, sum_each(acc));
  }
  for (; t < length; ++t) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t j = 0; j < dim; j += 8)
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(query + j), load8(keys + t * position_stride + j), acc);
    scores[t] = horizontal_sum(acc);
  }
}

// out[0..dim) = sum over t < length of p[t] * value t: 64 columns at a time, their sums in registers.
template <typename T>
void weigh_values(const float* p, const T* values, int64_t position_stride, int64_t length, int64_t dim, float* out) {
  int64_t j = 0;
  for (; j + 64 <= dim; j += 64) {
    __m256 acc[8];
    for (int u = 0; u < 8; ++u) acc[u] = _mm256_setzero_ps();
    for (int64_t t = 0; t < length; ++t) {
      const __m256 weight = _mm256_set1_ps(p[t]);
      for (int u = 0; u < 8; ++u) acc[u] = _mm256_fmadd_ps(weight, load8(values + t * position_stride + j + 8 * u), acc[u]);
    }
    for (int u = 0; u < 8; ++u) _mm256_storeu_ps(out + j + 8 * u, acc[u]);
  }
  for (; j < dim; j += 8) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t t = 0; t < length; ++t)
      acc = _mm256_fmadd_ps(_mm256_set1_ps(p[t]), load8(values + t * position_stride + j), acc);
    _mm256_storeu_ps(out + j, acc);
  }
}

// p[0..length) = softmax(p[0..length)).
void softmax(float* p, int64_t length) {
  using Vec = at::vec::Vectorized<float>;
  const int64_t whole = length / 8 * 8;
  float high = -INFINITY;
  for (int64_t t = 0; t < length; ++t) high = std::max(high, p[t]);
  float total = 0.0f;
  for (int64_t t = 0; t < whole; t += 8) {
    const Vec e = (Vec::loadu(p + t) - Vec(high)).exp_u20();
    e.store(p + t);
    total += at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return x + y; }, e);
  }
  for (int64_t t = whole; t < length; ++t) total += p[t] = std::exp(p[t] - high);
  const float inverse = 1.0f / total;
  for (int64_t t = 0; t < length; ++t) p[t] *= inverse;
}

template <typename T>
void attend(const at::Tensor& qkv, const at::Tensor& cos_rows, const at::Tensor& sin_rows, T* keys_base,
            T* values_base, at::IntArrayRef strides, const int64_t* pos, int64_t n_heads, int64_t n_kv_heads,
            int64_t dim, at::Tensor& out) {
  const int64_t group = n_heads / n_kv_heads;
  const float* in = qkv.data_ptr<float>();
  float* result = out.data_ptr<float>();
  const int64_t slot_stride = strides[0], head_stride = strides[1], position_stride = strides[2];
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  // One task per row and KV head: its query heads share the keys and values it reads from the cache.
  at::parallel_for(0, qkv.size(0) * n_kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores, queries(group * dim), roped(dim);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / n_kv_heads, h = task % n_kv_heads, length = pos[b] + 1;
      const float* row = in + b * qkv.size(1);
      const float* c = cos_rows.data_ptr<float>() + b * dim;
      const float* s = sin_rows.data_ptr<float>() + b * dim;
      T* keys = keys_base + b * slot_stride + h * head_stride;
      T* values = values_base + b * slot_stride + h * head_stride;
      rope(row + (n_heads + h) * dim, c, s, roped.data(), dim);
      store(keys + pos[b] * position_stride, roped.data(), dim);
      store(values + pos[b] * position_stride, row + (n_heads + n_kv_heads + h) * dim, dim);
      scores.resize(group * length);
      for (int64_t g = 0; g < group; ++g) {
        float* query = queries.data() + g * dim;
        rope(row + (h * group + g) * dim, c, s, query, dim);
        for (int64_t j = 0; j < dim; ++j) query[j] *= scale;
        dot_keys(query, keys, position_stride, length, dim, scores.data() + g * length);
        softmax(scores.data() + g * length, length);
      }
      for (int64_t g = 0; g < group; ++g)
        weigh_values(scores.data() + g * length, values, position_stride, length, dim,
                     result + (b * n_heads + h * group + g) * dim);
    }
  });
}

// One decode step's attention for rows 0..B-1, each at its own position: rotary embedding of the new queries and
// keys, the new keys and values written into the cache, then each query head attends over its row's positions
// 0..position. qkv: [B, (heads + 2 kv_heads) * dim] float32, as the fused projection gives it; cos, sin_signed:
// [B, dim], the rotary tables at each row's position; caches: [slots, kv_heads, positions, dim], float32 or float16
// (written).
// Returns [B, heads * dim]. In one op what ATen does in about fifteen, with no mask to build for rows of unequal
// length.
at::Tensor decode_attention(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin_signed,
                            at::Tensor cache_k, at::Tensor cache_v, const at::Tensor& positions, int64_t n_heads,
                            int64_t n_kv_heads) {
  TORCH_CHECK(qkv.dim() == 2 && qkv.scalar_type() == at::kFloat && qkv.is_contiguous(),
              "decode_attention: qkv must be a contiguous 2-D float32 tensor");
  TORCH_CHECK(cache_k.scalar_type() == cache_v.scalar_type() && cache_k.dim() == 4 &&
                  (cache_k.scalar_type() == at::kFloat || cache_k.scalar_type() == at::kHalf),
              "decode_attention: caches must be 4-D, both float32 or both float16");
  TORCH_CHECK(cache_k.stride(3) == 1 && cache_v.stride(3) == 1 && cache_k.strides() == cache_v.strides(),
              "decode_attention: caches must be alike, contiguous in their last dimension");
  TORCH_CHECK(positions.scalar_type() == at::kLong, "decode_attention: positions must be int64");
  const int64_t rows = qkv.size(0), dim = cache_k.size(3);
  TORCH_CHECK(dim % 8 == 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0 && qkv.size(1) == (n_heads + 2 * n_kv_heads) * dim && rows <= cache_k.size(0),
              "decode_attention: shapes do not match");
  const at::Tensor cos_rows = cos.reshape({rows, dim}).contiguous(), sin_rows = sin_signed.reshape({rows, dim}).contiguous();
  const at::Tensor position = positions.contiguous();
  const int64_t* pos = position.data_ptr<int64_t>();
  for (int64_t b = 0; b < rows; ++b)
    TORCH_CHECK(pos[b] >= 0 && pos[b] < cache_k.size(2), "decode_attention: position ", pos[b], " is outside the cache");
  at::Tensor out = at::empty({rows, n_heads * dim}, qkv.options());
  if (cache_k.scalar_type() == at::kHalf) {
    attend(qkv, cos_rows, sin_rows, cache_k.data_ptr<c10::Half>(), cache_v.data_ptr<c10::Half>(), cache_k.strides(), pos,
           n_heads, n_kv_heads, dim, out);
  } else {
    attend(qkv, cos_rows, sin_rows, cache_k.data_ptr<float>(), cache_v.data_ptr<float>(), cache_k.strides(), pos,
           n_heads, n_kv_heads, dim, out);
  }
  return out;
}

// The residual stream h + delta (delta may be absent) and its RMSNorm: (h + delta) * weight / sqrt(sum of squares +
// hidden_eps), where `weight` is the norm's weight times sqrt(hidden) and hidden_eps is hidden * eps (as the
// TorchScript step keeps them). h, delta: [rows, hidden] float32. One op where ATen takes about six.
std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& h, const std::optional<at::Tensor>& delta,
                                                const at::Tensor& weight, const at::Tensor& hidden_eps) {
  TORCH_CHECK(h.dim() == 2 && h.scalar_type() == at::kFloat, "add_rms_norm: h must be a 2-D float32 tensor");
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.numel() == h.size(1), "add_rms_norm: weight must match h");
  const int64_t rows = h.size(0), hidden = h.size(1);
  using Vec = at::vec::Vectorized<float>;
  const at::Tensor stream = h.contiguous(), w = weight.contiguous();
  at::Tensor change;
  if (delta.has_value()) {
    TORCH_CHECK(delta->sizes() == h.sizes() && delta->scalar_type() == at::kFloat, "add_rms_norm: delta must match h");
    change = delta->contiguous();
  }
  at::Tensor sum = at::empty({rows, hidden}, h.options()), normed = at::empty({rows, hidden}, h.options());
  const float eps = hidden_eps.item<float>();
  const float* w_data = w.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = stream.data_ptr<float>() + r * hidden;
    const float* add = change.defined() ? change.data_ptr<float>() + r * hidden : nullptr;
    float* total = sum.data_ptr<float>() + r * hidden;
    float* out = normed.data_ptr<float>() + r * hidden;
    Vec squares(0.0f);
    float tail = 0.0f;
    int64_t j = 0;
    for (; j + Vec::size() <= hidden; j += Vec::size()) {
      Vec v = Vec::loadu(in + j);
      if (add != nullptr) v = v + Vec::loadu(add + j);
      v.store(total + j);
      squares = at::vec::fmadd(v, v, squares);
    }
    for (; j < hidden; ++j) {
      total[j] = in[j] + (add != nullptr ? add[j] : 0.0f);
      tail += total[j] * total[j];
    }
    const float sum_of_squares = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return x + y; }, squares) + tail;
    const float scale = 1.0f / std::sqrt(sum_of_squares + eps);
    j = 0;
    for (; j + Vec::size() <= hidden; j += Vec::size())
      (Vec::loadu(total + j) * Vec(scale) * Vec::loadu(w_data + j)).store(out + j);
    for (; j < hidden; ++j) out[j] = total[j] * scale * w_data[j];
  }
  return {sum, normed};
}

// silu(gate) * up for the fused gate/up projection's output [rows, 2 * intermediate] float32.
at::Tensor silu_mul(const at::Tensor& gate_up) {
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.scalar_type() == at::kFloat && gate_up.size(1) % 2 == 0,
              "silu_mul: gate_up must be a 2-D float32 tensor of even width");
  using Vec = at::vec::Vectorized<float>;
  const at::Tensor input = gate_up.contiguous();
  const int64_t rows = input.size(0), width = input.size(1) / 2;
  at::Tensor out = at::empty({rows, width}, input.options());
  for (int64_t r = 0; r < rows; ++r) {
    const float* gate = input.data_ptr<float>() + r * 2 * width;
    const float* up = gate + width;
    float* o = out.data_ptr<float>() + r * width;
    int64_t j = 0;
    for (; j + Vec::size() <= width; j += Vec::size()) {
      const Vec g = Vec::loadu(gate + j);
      (g / (Vec(1.0f) + g.neg().exp_u20()) * Vec::loadu(up + j)).store(o + j);
    }
    for (; j < width; ++j) o[j] = gate[j] / (1.0f + std::exp(-gate[j])) * up[j];
  }
  return out;
}

// A token drawn from one row of logits: weights exp((logit - max) / temperature), those below min_p (the largest
// being 1) dropped, then the smallest set of most likely tokens whose mass reaches top_p (top_p < 1), and the token
// where `uniform` (in [0, 1)) times their mass falls in their running sum. -inf logits (a grammar's mask) have
// weight 0 and are never drawn; -1 where no token has weight (every logit -inf). sampling._sample is the same in
// numpy, where the kernels are not built; this does in ~30-100 us what numpy's dozen passes over a 49k vocabulary
// did in ~100-200.
int64_t sample(const at::Tensor& logits, double temperature, double top_p, double min_p, double uniform) {
  TORCH_CHECK(logits.dim() == 1 && logits.scalar_type() == at::kFloat, "sample: logits must be a 1-D float32 tensor");
  TORCH_CHECK(temperature > 0, "sample: temperature must be positive");
  using Vec = at::vec::Vectorized<float>;
  const at::Tensor row = logits.contiguous();
  const float* x = row.data_ptr<float>();
  const int64_t n = row.numel(), whole = n / 8 * 8;
  __m256 highs = _mm256_set1_ps(-INFINITY);
  for (int64_t i = 0; i < whole; i += 8) highs = _mm256_max_ps(highs, _mm256_loadu_ps(x + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, highs);
  float top = *std::max_element(lanes, lanes + 8);
  for (int64_t i = whole; i < n; ++i) top = std::max(top, x[i]);
  if (top == -INFINITY) return -1;
  // The weights of the tokens near the top (>= 1e-6: where the mass usually is), with their ids, and the total.
  const float inverse = static_cast<float>(1.0 / temperature);
  const float floor = std::max(static_cast<float>(min_p), 0.0f);
  const __m256 none = _mm256_set1_ps(-INFINITY), highest = _mm256_set1_ps(top), one = _mm256_set1_ps(1.0f);
  // top_p >= 1 draws from every token: no near list to gather (a floor above every weight gathers none).
  const float near = top_p < 1.0 ? 1e-6f : INFINITY;
  const __m256 below = _mm256_set1_ps(floor), near_floor = _mm256_set1_ps(near);
  // Every entry is written before it is read: no zero fill (a 196 KB memset per token at a 49k vocabulary).
  const std::unique_ptr<float[]> weights(new float[n]);
  std::vector<int64_t> ids;
  std::vector<float> kept;
  ids.reserve(n);
  kept.reserve(n);
  __m256 sums = _mm256_setzero_ps();
  for (int64_t i = 0; i < whole; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    __m256 w = (Vec(_mm256_sub_ps(v, highest)) * Vec(inverse)).exp_u20();
    // At most 1 (the approximate exp may overshoot), exactly 1 for the top.
    w = _mm256_blendv_ps(_mm256_min_ps(w, one), one, _mm256_cmp_ps(v, highest, _CMP_EQ_OQ));
    w = _mm256_and_ps(w, _mm256_cmp_ps(v, none, _CMP_GT_OQ));
    w = _mm256_and_ps(w, _mm256_cmp_ps(w, below, _CMP_GE_OQ));
    _mm256_storeu_ps(weights.get() + i, w);
    sums = _mm256_add_ps(sums, w);
    for (int mask = _mm256_movemask_ps(_mm256_cmp_ps(w, near_floor, _CMP_GE_OQ)); mask; mask &= mask - 1) {
      ids.push_back(i + __builtin_ctz(mask));
      kept.push_back(weights[ids.back()]);
    }
  }
  double total = horizontal_sum(sums);
  for (int64_t i = whole; i < n; ++i) {
    float w = x[i] == top ? 1.0f : x[i] == -INFINITY ? 0.0f : std::exp((x[i] - top) * inverse);
    weights[i] = w = w >= floor ? w : 0.0f;
    total += w;
    if (w >= near) {
      ids.push_back(i);
      kept.push_back(w);
    }
  }
  if (top_p >= 1.0) {  // every token with weight, in id order: the running sum 8 weights at a time
    const double target = uniform * total;
    double running = 0.0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const double chunk = horizontal_sum(_mm256_loadu_ps(weights.get() + i));
      if (running + chunk > target) break;
      running += chunk;
    }
    int64_t last = -1;
    for (; i < n; ++i) {
      if (weights[i] > 0.0f) last = i;
      running += weights[i];
      if (running > target && weights[i] > 0.0f) return i;
    }
    for (i = n - 1; last < 0 && i >= 0; --i)  // rounding put the draw at the very top
      if (weights[i] > 0.0f) last = i;
    return last;
  }
  double mass = 0.0;
  for (float w : kept) mass += w;
  const double needed = top_p * total;
  if (mass < needed) {  // every token with weight, in id order
    ids.clear();
    kept.clear();
    for (int64_t i = 0; i < n; ++i)
      if (weights[i] > 0.0f) {
        ids.push_back(i);
        kept.push_back(weights[i]);
      }
    mass = total;
  }
  if (top_p < 1.0) {
    // Which tokens reach top_p: a histogram of the candidates' mass by weight (8 buckets an octave, from the bits of
    // the float: heaviest first), then only the bucket where the running mass crosses top_p is sorted.
    constexpr int kBuckets = 1024;
    std::vector<double> bucket_mass(kBuckets, 0.0);
    auto bucket = [](float w) {
      uint32_t bits;
      std::memcpy(&bits, &w, 4);
      return std::min<int>(kBuckets - 1, static_cast<int>((0x3F800000u - bits) >> 20));
    };
    for (float w : kept) bucket_mass[bucket(w)] += w;
    int boundary = 0;
    double above = 0.0;  // the mass of the buckets before the boundary
    while (boundary < kBuckets - 1 && above + bucket_mass[boundary] < needed) above += bucket_mass[boundary++];
    std::vector<std::pair<float, int64_t>> edge;
    size_t out = 0;
    for (size_t k = 0; k < ids.size(); ++k) {
      const int b = bucket(kept[k]);
      if (b < boundary) {
        ids[out] = ids[k];
        kept[out++] = kept[k];
      } else if (b == boundary) {
        edge.emplace_back(kept[k], ids[k]);
      }
    }
    std::sort(edge.begin(), edge.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    mass = above;
    for (const auto& [w, id] : edge) {
      if (mass >= needed && out > 0) break;
      ids[out] = id;
      kept[out++] = w;
      mass += w;
    }
    ids.resize(out);
    kept.resize(out);
  }
  if (ids.empty()) return -1;  // min_p dropped every token
  const double target = uniform * mass;
  double running = 0.0;
  for (size_t k = 0; k < ids.size(); ++k) {
    running += kept[k];
    if (running > target) return ids[k];
  }
  return ids.back();  // rounding put the draw at the very top
}

}  // namespace

TORCH_LIBRARY_IMPL(lamina_torch, CPU, m) {
  m.impl("add_rms_norm", &add_rms_norm);
  m.impl("silu_mul", &silu_mul);
  m.impl("block_linear", &block_linear);
  m.impl("decode_attention", &decode_attention);
  m.impl("sample", &sample);
}
