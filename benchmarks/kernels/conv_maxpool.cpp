// Prototype of the kernel onnxruntime's CPU provider lacks for LeNet: a 2-D convolution (stride 1, no padding, one
// group) fused with its bias, an optional ReLU and the 2 x 2 / stride-2 max-pool after it, one image at a time:
//
//   1. im2col of one image into a panel P[K][N] (K = C k k, N = output positions rounded up to 16), masked AVX-512
//      row copies (no per-row memcpy call);
//   2. out[O][N] = W[O][K] P[K][N] + bias: 6 output channels x 64 positions per register tile (24 accumulators),
//      the bias as the accumulators' start, the weights broadcast from their row-major [O][K] layout;
//   3. the 2 x 2 max-pool (and the ReLU, which commutes with max) read from that per-image buffer.
//
// Benchmark code (benchmarks/inference_roofline.py compiles it with the system C++ compiler and loads it with
// ctypes): it is not part of the served model. Serving it would take an onnxruntime custom-operator library, built
// against onnxruntime's C API headers, which no package registry this project can reach ships.
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <vector>

namespace {

template <int MR, int NV>
__attribute__((target("avx512f"))) inline void tile(const float* w, int k_total, const float* p, int ldp,
                                                   const float* bias, float* c, int ldc) {
    __m512 acc[MR][NV];
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_set1_ps(bias[i]);
    for (int kk = 0; kk < k_total; ++kk) {
        __m512 row[NV];
        for (int j = 0; j < NV; ++j) row[j] = _mm512_loadu_ps(p + static_cast<std::size_t>(kk) * ldp + 16 * j);
        for (int i = 0; i < MR; ++i) {
            const __m512 weight = _mm512_set1_ps(w[static_cast<std::size_t>(i) * k_total + kk]);
            for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_fmadd_ps(weight, row[j], acc[i][j]);
        }
    }
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NV; ++j) _mm512_storeu_ps(c + static_cast<std::size_t>(i) * ldc + 16 * j, acc[i][j]);
}

template <int MR>
__attribute__((target("avx512f"))) void tile_columns(int vectors, const float* w, int k_total, const float* p,
                                                     int ldp, const float* bias, float* c, int ldc) {
    switch (vectors) {
        case 4: tile<MR, 4>(w, k_total, p, ldp, bias, c, ldc); break;
        case 3: tile<MR, 3>(w, k_total, p, ldp, bias, c, ldc); break;
        case 2: tile<MR, 2>(w, k_total, p, ldp, bias, c, ldc); break;
        default: tile<MR, 1>(w, k_total, p, ldp, bias, c, ldc); break;
    }
}

__attribute__((target("avx512f"))) void one_image(const float* x, const float* w, const float* b, float* y, int channels,
                                                  int height, int width, int out_channels, int k, bool relu,
                                                  float* panel, float* conv) {
    const int oh_n = height - k + 1, ow_n = width - k + 1, k_total = channels * k * k;
    const int ld = (oh_n * ow_n + 15) / 16 * 16;
    for (int c = 0; c < channels; ++c)
        for (int kh = 0; kh < k; ++kh)
            for (int kw = 0; kw < k; ++kw) {
                float* dst = panel + static_cast<std::size_t>((c * k + kh) * k + kw) * ld;
                const float* src = x + static_cast<std::size_t>(c) * height * width + kh * width + kw;
                for (int oh = 0; oh < oh_n; ++oh)
                    for (int j = 0; j < ow_n; j += 16) {
                        const __mmask16 mask = static_cast<__mmask16>((1u << std::min(16, ow_n - j)) - 1u);
                        _mm512_mask_storeu_ps(dst + oh * ow_n + j, mask,
                                              _mm512_maskz_loadu_ps(mask, src + oh * width + j));
                    }
            }
    for (int n0 = 0; n0 < ld; n0 += 64) {
        const int vectors = std::min(4, (ld - n0) / 16);
        for (int m0 = 0; m0 < out_channels; m0 += 6) {
            const float* wm = w + static_cast<std::size_t>(m0) * k_total;
            float* cm = conv + static_cast<std::size_t>(m0) * ld + n0;
            switch (std::min(6, out_channels - m0)) {
                case 6: tile_columns<6>(vectors, wm, k_total, panel + n0, ld, b + m0, cm, ld); break;
                case 5: tile_columns<5>(vectors, wm, k_total, panel + n0, ld, b + m0, cm, ld); break;
                case 4: tile_columns<4>(vectors, wm, k_total, panel + n0, ld, b + m0, cm, ld); break;
                case 3: tile_columns<3>(vectors, wm, k_total, panel + n0, ld, b + m0, cm, ld); break;
                case 2: tile_columns<2>(vectors, wm, k_total, panel + n0, ld, b + m0, cm, ld); break;
                default: tile_columns<1>(vectors, wm, k_total, panel + n0, ld, b + m0, cm, ld); break;
            }
        }
    }
    const int ph_n = oh_n / 2, pw_n = ow_n / 2;
    for (int o = 0; o < out_channels; ++o) {
        const float* co = conv + static_cast<std::size_t>(o) * ld;
        float* yo = y + static_cast<std::size_t>(o) * ph_n * pw_n;
        for (int i = 0; i < ph_n; ++i)
            for (int j = 0; j < pw_n; ++j) {
                const float* q = co + 2 * i * ow_n + 2 * j;
                float m = std::max(std::max(q[0], q[1]), std::max(q[ow_n], q[ow_n + 1]));
                yo[i * pw_n + j] = relu ? std::max(m, 0.0f) : m;
            }
    }
}

}  // namespace

extern "C" {

// 1 where this CPU can run the kernel (AVX-512F), else 0.
int conv_maxpool_supported() { return __builtin_cpu_supports("avx512f") ? 1 : 0; }

// x [n, channels, height, width], w [out_channels, channels, k, k], b [out_channels] ->
// y [n, out_channels, (height - k + 1) / 2, (width - k + 1) / 2]. Returns 0, or -1 where the CPU lacks AVX-512F or
// a size is invalid.
int conv_maxpool(const float* x, const float* w, const float* b, float* y, int n, int channels, int height, int width,
                 int out_channels, int k, int relu) {
    if (!conv_maxpool_supported() || n < 0 || channels < 1 || out_channels < 1 || k < 1 || height < k || width < k)
        return -1;
    const int oh_n = height - k + 1, ow_n = width - k + 1;
    const std::size_t ld = (static_cast<std::size_t>(oh_n) * ow_n + 15) / 16 * 16;
    std::vector<float> panel(static_cast<std::size_t>(channels) * k * k * ld, 0.0f);
    std::vector<float> conv(static_cast<std::size_t>(out_channels) * ld);
    const std::size_t in_size = static_cast<std::size_t>(channels) * height * width;
    const std::size_t out_size = static_cast<std::size_t>(out_channels) * (oh_n / 2) * (ow_n / 2);
    for (int i = 0; i < n; ++i)
        one_image(x + i * in_size, w, b, y + i * out_size, channels, height, width, out_channels, k, relu != 0,
                  panel.data(), conv.data());
    return 0;
}

}  // extern "C"
