// Python surface of the allocator: torch_tier._C.* (used by torch_tier.runtime
// and torch_tier.tiers; not a public API of its own).
#include <c10/core/CPUAllocator.h>
#include <torch/extension.h>

#include <chrono>
#include <cstdlib>
#include <thread>
#include <unordered_map>

#include "allocator.h"
#include "arena_backend.h"
#include "bindings.h"
#include "dram_backend.h"
#include "memkind_backend.h"
#include "numa_backend.h"

namespace py = pybind11;

namespace torch_tier {
namespace {

Tier to_tier(int tier) {
  if (tier != kDram && tier != kPm) throw std::invalid_argument("tier index must be 0 (dram) or 1 (pm)");
  return static_cast<Tier>(tier);
}

py::dict stats_dict(Tier tier) {
  const TierStats s = TieringAllocator::instance().stats(tier);
  py::dict d;
  d["live_bytes"] = s.live_bytes;
  d["peak_bytes"] = s.peak_bytes;
  d["allocations"] = s.allocations;
  d["fallbacks"] = s.fallbacks;
  d["failures"] = s.failures;
  const BlockCacheStats split = TieringAllocator::instance().split_cache_stats();
  if (tier == kDram) {
    const BlockCacheStats cache = DramBackend::instance().cache_stats();
    d["cached_bytes"] = cache.cached_bytes;
    d["cache_capacity"] = cache.capacity;
    d["cache_hits"] = cache.hits;
    d["cache_evictions"] = cache.evictions;
    d["split_cached_bytes"] = split.cached_dram_bytes;
  } else {
    d["split_cached_bytes"] = split.cached_bytes - split.cached_dram_bytes;
    d["split_cache_capacity"] = split.capacity;
    d["split_cache_hits"] = split.hits;
    d["split_cache_evictions"] = split.evictions;
  }
  return d;
}

template <typename Fn>
Fn* fn_at(uintptr_t address) {
  if (!address) throw std::invalid_argument("null memkind entry point");
  return reinterpret_cast<Fn*>(address);
}

}  // namespace

void bind_allocator(py::module_& m) {
  // The tier indices as the allocator numbers them; torch_tier.tiers must agree (tested).
  py::dict tiers;
  tiers["dram"] = static_cast<int>(kDram);
  tiers["pm"] = static_cast<int>(kPm);
  m.attr("TIERS") = tiers;
  m.def("enable_sim", [](size_t capacity, const std::string& fit, bool error_on_full) {
    auto* arena = new ArenaBackend(capacity, parse_fit(fit));
    TieringAllocator::instance().enable(arena, error_on_full);
  }, py::arg("capacity"), py::arg("fit"), py::arg("error_on_full"),
     "Enable the allocator with a simulated pm tier: a mapped arena of `capacity` bytes.");

  m.def("enable_memkind", [](uintptr_t kind, uintptr_t posix_memalign, uintptr_t free,
                             uintptr_t destroy_kind, uintptr_t malloc_usable_size, const std::string& name,
                             bool error_on_full) {
    MemkindApi api{fn_at<int(void*, void**, size_t, size_t)>(posix_memalign),
                   fn_at<void(void*, void*)>(free),
                   destroy_kind ? fn_at<int(void*)>(destroy_kind) : nullptr,
                   malloc_usable_size ? fn_at<size_t(void*, void*)>(malloc_usable_size) : nullptr};
    auto* backend = new MemkindBackend(reinterpret_cast<void*>(kind), api, name);
    TieringAllocator::instance().enable(backend, error_on_full);
  }, py::arg("kind"), py::arg("posix_memalign"), py::arg("free"), py::arg("destroy_kind"),
     py::arg("malloc_usable_size"), py::arg("name"), py::arg("error_on_full"),
     "Enable the allocator with a memkind pm tier (addresses from torch_tier.memkind's cffi binding).");

  m.def("enable_numa", [](int node, size_t capacity, const std::string& fit, bool error_on_full) {
    auto* numa = new NumaBackend(node, capacity, parse_fit(fit));
    TieringAllocator::instance().enable(numa, error_on_full);
  }, py::arg("node"), py::arg("capacity"), py::arg("fit"), py::arg("error_on_full"),
     "Enable the allocator with NUMA node `node`'s memory as the pm tier: an arena of `capacity` bytes "
     "bound to the node.");
  m.def("page_nodes", [](const at::Tensor& t) {
    if (!t.has_storage() || !t.storage().data()) return std::vector<int>{};
    return page_nodes(t.storage().data(), t.storage().nbytes());
  }, "The NUMA node of each page of the tensor's storage (move_pages); -ENOENT for a page never touched.");
  m.def("memory_policy", [](const at::Tensor& t) {
    if (!t.has_storage() || !t.storage().data()) throw std::invalid_argument("memory_policy: the tensor has no memory");
    const MemoryPolicy policy = memory_policy_at(t.storage().data());
    return py::make_tuple(policy.mode, policy.nodes);
  }, "(mode, nodes): the kernel's memory policy for the first page of the tensor's storage (get_mempolicy).");

  m.def("disable", [] { TieringAllocator::instance().disable(); },
        "Restore the previous CPU allocator; live blocks still free to their tier.");
  m.def("enabled", [] { return TieringAllocator::instance().enabled(); });
  m.def("set_dram_cache_capacity", [](size_t bytes) { DramBackend::instance().set_cache_capacity(bytes); },
        "Bytes of freed DRAM blocks kept for reuse while enabled (least recently freed evicted first).");
  m.def("set_split_cache_capacity", [](size_t bytes) { TieringAllocator::instance().set_split_cache_capacity(bytes); },
        "Bytes (both tiers' pages) of freed split blocks kept for reuse (least recently freed evicted first).");
  m.def("default_dram_cache_capacity", [] { return DramBackend::default_cache_capacity(); },
        "The DRAM cache's default capacity: 1/16 of this machine's memory, at most 1 GiB.");
  m.attr("SIM_MAX_CAPACITY") = ArenaBackend::kMaxCapacity;
  m.def("arena_block_bytes", [](size_t bytes) { return round_up(bytes, ArenaBackend::kCell); },
        "Bytes a block of `bytes` occupies in a simulated-tier arena (256-byte cells).");
  m.def("cpu_allocator_priority", [] { return TieringAllocator::instance().cpu_allocator_priority(); },
        "The priority c10 holds for the CPU allocator now (probed and restored).");
  m.def("cpu_allocator_is_default", [] { return c10::GetCPUAllocator() == c10::GetDefaultCPUAllocator(); });
  m.def("live_backends", [] { return TieringAllocator::instance().live_backends(); },
        "Backends alive: DRAM, the tiers' current ones, and retired ones that still have live blocks.");
  m.def("replay_arena", [](size_t capacity, const std::string& fit,
                           const std::vector<std::tuple<bool, int64_t, size_t>>& events) {
    ArenaBackend arena(capacity, parse_fit(fit));
    std::unordered_map<int64_t, void*> live;
    int64_t first_failure = -1;
    {
      py::gil_scoped_release no_gil;
      for (size_t i = 0; i < events.size(); ++i) {
        const auto& [is_free, id, size] = events[i];
        if (is_free) {
          if (auto it = live.find(id); it != live.end()) {  // else allocated before the trace began
            arena.deallocate(it->second, size);
            live.erase(it);
          }
        } else if (void* block = arena.allocate(size)) {
          live[id] = block;
        } else if (first_failure < 0) {
          first_failure = static_cast<int64_t>(i);
        }
      }
    }
    py::dict d;
    d["high_water"] = arena.layout().high_water;
    d["first_failure"] = first_failure;
    return d;
  }, py::arg("capacity"), py::arg("fit"), py::arg("events"),
     "Replay (is_free, id, size) events in a fresh simulated-tier arena with the given fit rule: its "
     "high-water mark and the index of the first allocation that failed (-1 if none).");
  m.def("pm_layout", []() -> py::object {
    const std::optional<ArenaLayout> layout = TieringAllocator::instance().pm_layout();
    if (!layout) return py::none();
    py::dict d;
    d["capacity"] = layout->capacity;
    d["high_water"] = layout->high_water;
    d["free_bytes"] = layout->free_bytes;
    d["largest_free"] = layout->largest_free;
    d["free_blocks"] = layout->free_blocks;
    return d;
  }, "The pm tier's arena (sim or numa): capacity, high-water mark, free bytes and blocks (None for memkind).");
  m.def("pm_description", [] { return TieringAllocator::instance().pm_description(); });

  m.def("set_tier", [](py::object tier) {
    if (py::isinstance<py::int_>(tier)) return set_current_tier(to_tier(tier.cast<int>()));
    const double pm_share = tier.cast<double>();
    if (!(pm_share > 0.0 && pm_share < 1.0))
      throw std::invalid_argument("a split's pm share must be between 0 and 1, got " + std::to_string(pm_share));
    set_current_split(pm_share);
  }, "Set the calling thread's tier for new allocations: a tier index, or a float 0 < x < 1 to split each "
     "new block, x of its pages in pm (its last pages) and the rest in DRAM.");
  m.def("get_tier", []() -> py::object {
    if (current_split() != 0.0) return py::float_(current_split());
    return py::int_(static_cast<int>(current_tier()));
  }, "The calling thread's tier index, or its split's pm share (a float): what set_tier was given.");
  m.attr("SPLIT") = kSplitTier;
  m.def("thread_allocated", [](int tier) { return thread_allocated(to_tier(tier)); },
        "Bytes the calling thread has allocated in `tier` so far (a running total).");
  m.def("thread_split_allocated", [](int tier) { return thread_split_allocated(to_tier(tier)); },
        "Of thread_allocated(tier), the bytes of split blocks' parts in `tier`.");
  m.def("spin", [](double seconds) {
    py::gil_scoped_release no_gil;
    const auto start = std::chrono::steady_clock::now();
    const auto until = start + std::chrono::duration<double>(seconds);
    auto now = start;
    while (now < until) now = std::chrono::steady_clock::now();
    return std::chrono::duration<double>(now - start).count();
  }, "Busy-wait `seconds` (precise to about a microsecond, unlike sleep), without the GIL; "
     "returns the seconds actually spun.");
  m.def("tier_of", [](const at::Tensor& t) {
    return t.has_storage() ? TieringAllocator::tier_of(t.storage().data_ptr()) : -1;
  }, "Tier index of the tensor's storage, SPLIT when split between the tiers, or -1 when torch-tier did not "
     "allocate it.");
  m.def("tier_bytes", [](const at::Tensor& t) {
    const auto bytes = t.has_storage() ? TieringAllocator::tier_bytes(t.storage().data_ptr())
                                       : std::array<uint64_t, kNumTiers>{0, 0};
    return py::make_tuple(bytes[kDram], bytes[kPm]);
  }, "Bytes of the tensor's storage block in DRAM and in pm: a split block's pages in each, a whole block's "
     "request in its tier; (0, 0) when torch-tier did not allocate it.");

  m.def("stats", [](int tier) { return stats_dict(to_tier(tier)); });

  m.def("plan", [](int tier, std::vector<size_t> sizes, std::vector<size_t> offsets, size_t arena_bytes) {
    TieringAllocator::instance().plan(to_tier(tier), std::move(sizes), std::move(offsets), arena_bytes);
  }, py::arg("tier"), py::arg("sizes"), py::arg("offsets"), py::arg("arena_bytes"),
     "Serve the tier's forward-pass allocations from a planned arena (sizes as the backend sees them, "
     "offsets multiples of tier_alignment(tier)).");
  m.def("tier_alignment", [](int tier) { return tier_alignment(to_tier(tier)); },
        "The alignment of the tier's blocks: 64 bytes in DRAM, 256 (Optane's line) in pm.");
  m.def("begin_planned_pass", [] { TieringAllocator::instance().begin_planned_pass(); });
  m.def("planned_stats", [](int tier) {
    const PlannedStats s = TieringAllocator::instance().planned_stats(to_tier(tier));
    py::dict d;
    d["planned"] = s.planned;
    d["unplanned"] = s.unplanned;
    d["arena_bytes"] = s.arena_bytes;
    return d;
  });
  m.def("block_overhead", [] { return 0; }, "Bytes the allocator adds to each block: none (its metadata is out of band).");
  m.def("reset_peaks", [] { TieringAllocator::instance().reset_peaks(); });

  m.def("start_trace", [] { TieringAllocator::instance().start_trace(); });
  m.def("stop_trace", [] {
    std::vector<TraceEvent> events = TieringAllocator::instance().stop_trace();
    py::list out;
    for (const TraceEvent& e : events) out.append(py::make_tuple(e.seq, e.id, e.address, e.size, e.tier, e.is_free));
    return out;
  }, "Stop tracing; returns (seq, id, address, size, tier, is_free) per event.");
  m.def("time_alloc_free", [](size_t bytes, int64_t iterations, const std::string& allocator, int threads,
                              int64_t live, bool holes) {
    enum { kTiered, kDefault, kGlibc } which;
    if (allocator == "torch-tier") which = kTiered;
    else if (allocator == "default") which = kDefault;
    else if (allocator == "glibc") which = kGlibc;
    else throw std::invalid_argument("allocator: expected 'torch-tier', 'default' or 'glibc'");
    if (threads < 1 || iterations < 1 || live < 0) throw std::invalid_argument("threads, iterations >= 1, live >= 0");
    const Tier tier = current_tier();
    std::vector<double> ns(threads);
    std::atomic<int> ready{0};
    auto run = [&](int index) {
      set_current_tier(tier);
      c10::Allocator* c10_allocator = which == kTiered ? static_cast<c10::Allocator*>(&TieringAllocator::instance())
                                                       : c10::GetDefaultCPUAllocator();
      auto alloc = [&]() -> c10::DataPtr {
        if (which != kGlibc) return c10_allocator->allocate(bytes);
        void* ptr = nullptr;
        if (posix_memalign(&ptr, kAlignment, bytes) != 0) throw std::bad_alloc();
        return {ptr, ptr, &std::free, c10::Device(c10::DeviceType::CPU)};
      };
      std::vector<c10::DataPtr> held, gaps;
      held.reserve(live);
      gaps.reserve(holes ? live : 0);
      for (int64_t i = 0; i < live; ++i) {
        held.push_back(alloc());
        if (holes) gaps.push_back(alloc());
      }
      gaps.clear();  // a free hole between every two held blocks
      ready.fetch_add(1);
      while (ready.load() < threads) {
      }
      const auto start = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < iterations; ++i) c10::DataPtr block = alloc();
      ns[index] = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count() /
                  static_cast<double>(iterations);
      set_current_tier(kDram);
    };
    {
      py::gil_scoped_release no_gil;
      std::vector<std::thread> pool;
      for (int t = 1; t < threads; ++t) pool.emplace_back(run, t);
      run(0);
      set_current_tier(tier);
      for (std::thread& thread : pool) thread.join();
    }
    double total = 0;
    for (double v : ns) total += v;
    return total / threads;
  }, py::arg("bytes"), py::arg("iterations"), py::arg("allocator") = "torch-tier", py::arg("threads") = 1,
     py::arg("live") = 0, py::arg("holes") = false,
     "Mean ns for one allocate+free of `bytes` per thread, `threads` threads at once, each holding `live` "
     "other blocks of that size (with a freed block between each two if `holes`): torch-tier's allocator on "
     "the calling thread's tier, PyTorch's default CPU allocator, or glibc's posix_memalign/free; for "
     "benchmarks/overhead.py.");
  m.def("time_planned", [](int64_t live, int64_t iterations) {
    // A plan whose timed slot overlaps `live` freed earlier slots and sits beside `live` held ones:
    // the old per-slot conflict scan paid for every overlapping slot on each allocation.
    std::vector<size_t> sizes, offsets;
    const size_t cell = kAlignment, span = static_cast<size_t>(std::max<int64_t>(live, 1)) * cell;
    for (int64_t i = 0; i < live; ++i) sizes.push_back(cell), offsets.push_back(span + i * cell);  // held
    for (int64_t i = 0; i < live; ++i) sizes.push_back(cell), offsets.push_back(i * cell);          // freed
    const size_t first_timed = sizes.size();
    for (int64_t i = 0; i < iterations; ++i) sizes.push_back(span), offsets.push_back(0);
    PlannedBackend planned(&DramBackend::instance(), sizes, offsets, 2 * span, kAlignment);
    py::gil_scoped_release no_gil;
    planned.begin();
    std::vector<void*> held;
    for (int64_t i = 0; i < live; ++i) held.push_back(planned.allocate(cell));
    for (int64_t i = 0; i < live; ++i) planned.deallocate(planned.allocate(cell), cell);
    const auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < iterations; ++i) planned.deallocate(planned.allocate(span), span);
    const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    const PlannedStats stats = planned.stats();
    for (void* block : held) planned.deallocate(block, cell);
    if (stats.planned != static_cast<int64_t>(first_timed) + iterations)
      throw std::runtime_error("time_planned: the plan was not followed");
    return ns / static_cast<double>(iterations);
  }, py::arg("live"), py::arg("iterations"),
     "Mean ns for one planned allocate+free whose slot overlaps `live` earlier slots, with `live` blocks held.");
  m.def("trace_position", [] { return TieringAllocator::instance().trace_position(); });
}

}  // namespace torch_tier
