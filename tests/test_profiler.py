"""torch.profiler's memory view sees what torch-tier allocates, as it sees PyTorch's own CPU allocator."""

import torch
from torch.profiler import ProfilerActivity, profile

import torch_tier as tt


def memory_by_op(model, x) -> dict[str, int]:
    """Bytes each op allocated (net of what it freed) in one forward, as the profiler saw them."""
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(x)
    return {e.key: e.cpu_memory_usage for e in prof.key_averages() if e.key.startswith("aten::")}


def test_profile_memory_shows_the_forward_under_a_session(cnn):
    model, x = cnn
    plain = memory_by_op(model, x)
    assert plain["aten::mkldnn_convolution"] > 0
    for tier in ("pm", "dram"):
        with tt.enable(tt.Policy.uniform(model, tier, tier), model, pm="sim"):
            assert memory_by_op(model, x) == plain, tier  # op by op, byte for byte


def test_only_blocks_allocated_while_profiling_report_their_free(cnn):
    """A tensor allocated before the profiler started frees silently, as with c10's own allocator."""
    model, _ = cnn
    with tt.enable(tt.Policy.uniform(model, "pm", "pm"), model, pm="sim"):
        early = torch.empty(1 << 20)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            del early
            late = torch.empty(1 << 18)
            del late
    usage = [e.self_cpu_memory_usage for e in prof.key_averages() if e.self_cpu_memory_usage]
    assert min(usage, default=0) >= -(1 << 20)  # `late`'s free at most, never `early`'s 4 MiB
    assert sum(e.cpu_memory_usage for e in prof.key_averages() if e.key == "aten::empty") == 1 << 20
