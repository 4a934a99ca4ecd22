// CPU implementations of the natten ops (schemas in ops.cpp, semantics in docs/internals.md). `config` of
// the fused ops: forward [queries per task], backward [query splits]; empty picks the defaults. The unfused
// ops' config selects a kernel variant on other devices (CUDA: exact or tensor-core); the CPU has one.
#pragma once

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace natten::cpu {

std::tuple<at::Tensor, at::Tensor> na_fused_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    const std::optional<at::Tensor>& rpb,
                                                    const std::optional<at::Tensor>& additional_keys,
                                                    const std::optional<at::Tensor>& additional_values,
                                                    at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                                                    at::IntArrayRef stride, const c10::List<bool>& is_causal,
                                                    double scale, at::IntArrayRef config);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> na_fused_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const std::optional<at::Tensor>& grad_lse,
    const std::optional<at::Tensor>& rpb, const std::optional<at::Tensor>& additional_keys,
    const std::optional<at::Tensor>& additional_values, at::IntArrayRef kernel_size, at::IntArrayRef dilation,
    at::IntArrayRef stride, const c10::List<bool>& is_causal, double scale, at::IntArrayRef config);

at::Tensor na_qk_forward(const at::Tensor& q, const at::Tensor& k, const std::optional<at::Tensor>& rpb,
                         at::IntArrayRef kernel_size, at::IntArrayRef dilation, at::IntArrayRef stride,
                         const c10::List<bool>& is_causal,
    at::IntArrayRef config);

std::tuple<at::Tensor, at::Tensor, at::Tensor> na_qk_backward(const at::Tensor& grad_attn, const at::Tensor& q,
                                                              const at::Tensor& k,
                                                              const std::optional<at::Tensor>& rpb,
                                                              at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                                                              at::IntArrayRef stride,
                                                              const c10::List<bool>& is_causal,
    at::IntArrayRef config);

at::Tensor na_av_forward(const at::Tensor& attn, const at::Tensor& v, at::IntArrayRef kernel_size,
                         at::IntArrayRef dilation, at::IntArrayRef stride, const c10::List<bool>& is_causal,
    at::IntArrayRef config);

std::tuple<at::Tensor, at::Tensor> na_av_backward(const at::Tensor& grad_out, const at::Tensor& attn,
                                                  const at::Tensor& v, at::IntArrayRef kernel_size,
                                                  at::IntArrayRef dilation, at::IntArrayRef stride,
                                                  const c10::List<bool>& is_causal,
    at::IntArrayRef config);

}  // namespace natten::cpu
