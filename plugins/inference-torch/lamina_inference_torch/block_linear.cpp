// The ops of inline::torch's compiled decode step (schemas in kernels.py): block_linear, decode_attention,
// add_rms_norm and silu_mul.
//
// block_linear: matmuls of float32 activations with weights in 32-weight blocks, as GGUF's Q4_1 and Q8_0 quantize
// them, for decode batches (a few rows). ATen's int4 kernel turns each weight into a float on AVX2, so it is bound by arithmetic, not
// by the bytes it reads; here activations are rounded to int8 per 32-block (as llama.cpp does) and each block is
// one integer dot product, with the scales of eight blocks applied at once.
//
// One row of bytes per output feature, for its `n` blocks (32 inputs each), parts one after another so that eight
// blocks' scales load as one vector:
//   q4_1, 20 n bytes: n float16 scales d, n float16 offsets m, then 16 bytes of levels per block; weight j of a
//                     block = d * level_j + m, level_j in 0..15 the low nibble of byte j for j < 16, else the
//                     high nibble of byte j - 16.
//   q8_0, 34 n bytes: n float16 scales d, then 32 int8 levels per block; weight j = d * level_j.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kBlock = 32;
constexpr int64_t kQ4_1Bytes = 20;
constexpr int64_t kQ8_0Bytes = 34;
constexpr int64_t kGroup = 8;  // blocks whose integer dot products are reduced and scaled together

float half_to_float(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return _cvtsh_ss(bits);
}

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

// Lane i of the result is the sum of the lanes of v[i].
__m256i sum_each(const __m256i* v) {
  const __m256i a = _mm256_hadd_epi32(v[0], v[1]), b = _mm256_hadd_epi32(v[2], v[3]);
  const __m256i c = _mm256_hadd_epi32(v[4], v[5]), d = _mm256_hadd_epi32(v[6], v[7]);
  const __m256i low = _mm256_hadd_epi32(a, b), high = _mm256_hadd_epi32(c, d);
  return _mm256_add_epi32(_mm256_permute2x128_si256(low, high, 0x20), _mm256_permute2x128_si256(low, high, 0x31));
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

const __m256i* activation(const QuantizedRows& q, int64_t row, int64_t block) {
  return reinterpret_cast<const __m256i*>(q.levels.data() + (row * q.blocks + block) * kBlock);
}

// The integer dot product of one block's unsigned levels with int8 activations, as 8 int32 partial sums.
__m256i dot_unsigned(__m256i levels, const __m256i* act) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(levels, _mm256_loadu_si256(act)), _mm256_set1_epi16(1));
}

// maddubs takes one unsigned operand: the weight's sign moves onto the activation.
__m256i dot_signed(__m256i levels, __m256i magnitudes, const __m256i* act) {
  const __m256i signed_act = _mm256_sign_epi8(_mm256_loadu_si256(act), levels);
  return _mm256_madd_epi16(_mm256_maddubs_epi16(magnitudes, signed_act), _mm256_set1_epi16(1));
}

__m256i q4_1_levels(const uint8_t* packed) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(bytes, 4), bytes), _mm256_set1_epi8(0x0F));
}

// Most activation rows one pass over a weight row serves (their accumulators live on the stack).
constexpr int64_t kMaxRows = 16;

// out[r * stride] = the dot product of one q4_1 weight row with activation row first + r, for r < rows.
void q4_1_row(const uint8_t* w, const QuantizedRows& q, int64_t first, int64_t rows, float* out, int64_t stride) {
  const int64_t n = q.blocks;
  const uint8_t* scales = w;
  const uint8_t* offsets = w + 2 * n;
  const uint8_t* packed = w + 4 * n;
  __m256 acc[kMaxRows], offset_acc[kMaxRows];
  for (int64_t r = 0; r < rows; ++r) acc[r] = offset_acc[r] = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + kGroup <= n; b += kGroup) {
    __m256i levels[kGroup], dots[kGroup];
    for (int64_t k = 0; k < kGroup; ++k) levels[k] = q4_1_levels(packed + (b + k) * 16);
    const __m256 d = halves_to_floats(scales + 2 * b), m = halves_to_floats(offsets + 2 * b);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t k = 0; k < kGroup; ++k) dots[k] = dot_unsigned(levels[k], activation(q, first + r, b + k));
      const __m256 scale = _mm256_mul_ps(d, _mm256_loadu_ps(q.scale.data() + (first + r) * n + b));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum_each(dots)), scale, acc[r]);
      offset_acc[r] = _mm256_fmadd_ps(m, _mm256_loadu_ps(q.scaled_sum.data() + (first + r) * n + b), offset_acc[r]);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    float total = horizontal_sum(_mm256_add_ps(acc[r], offset_acc[r]));
    for (int64_t t = b; t < n; ++t) {
      const int dot = horizontal_sum(dot_unsigned(q4_1_levels(packed + t * 16), activation(q, first + r, t)));
      total += half_to_float(scales + 2 * t) * q.scale[(first + r) * n + t] * static_cast<float>(dot) +
               half_to_float(offsets + 2 * t) * q.scaled_sum[(first + r) * n + t];
    }
    out[r * stride] = total;
  }
}

void q8_0_row(const uint8_t* w, const QuantizedRows& q, int64_t first, int64_t rows, float* out, int64_t stride) {
  const int64_t n = q.blocks;
  const uint8_t* scales = w;
  const uint8_t* values = w + 2 * n;
  auto levels_of = [&](int64_t block) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(values + block * kBlock));
  };
  __m256 acc[kMaxRows];
  for (int64_t r = 0; r < rows; ++r) acc[r] = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + kGroup <= n; b += kGroup) {
    __m256i levels[kGroup], magnitudes[kGroup], dots[kGroup];
    for (int64_t k = 0; k < kGroup; ++k) {
      levels[k] = levels_of(b + k);
      magnitudes[k] = _mm256_sign_epi8(levels[k], levels[k]);
    }
    const __m256 d = halves_to_floats(scales + 2 * b);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t k = 0; k < kGroup; ++k) dots[k] = dot_signed(levels[k], magnitudes[k], activation(q, first + r, b + k));
      const __m256 scale = _mm256_mul_ps(d, _mm256_loadu_ps(q.scale.data() + (first + r) * n + b));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum_each(dots)), scale, acc[r]);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    float total = horizontal_sum(acc[r]);
    for (int64_t t = b; t < n; ++t) {
      const __m256i levels = levels_of(t);
      const int dot = horizontal_sum(dot_signed(levels, _mm256_sign_epi8(levels, levels), activation(q, first + r, t)));
      total += half_to_float(scales + 2 * t) * q.scale[(first + r) * n + t] * static_cast<float>(dot);
    }
    out[r * stride] = total;
  }
}

// x: [rows, in] float32; blocks: [out, in / 32 * block bytes] uint8, the format told by the bytes per block.
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
  // Output features split between threads; each reads its weight rows once per kMaxRows activation rows.
  at::parallel_for(0, out_features, 16, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      for (int64_t first = 0; first < rows; first += kMaxRows) {
        const int64_t count = std::min(kMaxRows, rows - first);
        float* target = result + first * out_features + o;
        if (q4_1) {
          q4_1_row(w + o * row_bytes, q, first, count, target, out_features);
        } else {
          q8_0_row(w + o * row_bytes, q, first, count, target, out_features);
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

}  // namespace

TORCH_LIBRARY_IMPL(lamina_torch, CPU, m) {
  m.impl("add_rms_norm", &add_rms_norm);
  m.impl("silu_mul", &silu_mul);
  m.impl("block_linear", &block_linear);
  m.impl("decode_attention", &decode_attention);
}
