"""Mixture of Experts with expert parallelism and MoE Parallel Folding (Liu et al., 2025,
"MoE Parallel Folding: Heterogeneous Parallelism Mappings for Efficient Large-Scale MoE Model
Training with Megatron Core", arXiv 2504.14960).

config.py (the `model.moe` keys, the `parallel.ep/etp` checks), router.py (top-k gating,
load-balancing and z-loss, capacity), experts.py (SwiGLU experts as one batched GEMM),
dispatch.py (the variable-size collectives that move tokens), layer.py (the MoE layer that
ties them), mapping.py (the MoE folding of the grid's ranks), placement.py (which group
reduces an expert's gradient, who counts it in the norm, how a checkpoint boxes it),
metrics.py (what a step logs), sizing.py (parameters, memory and FLOPs from formulas).
"""
