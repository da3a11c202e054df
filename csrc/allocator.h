// The tiering CPU allocator: registered with c10::SetCPUAllocator while a
// torch-tier session is enabled. Each allocation is served by the calling
// thread's current tier; each free goes back to the backend recorded in the
// block's header, whatever the current tier is, also after disable.
#pragma once
#include <c10/core/Allocator.h>

#include <array>
#include <mutex>
#include <vector>

#include <optional>

#include "arena_backend.h"
#include "backend.h"
#include "planned_backend.h"

namespace torch_tier {

enum Tier : uint8_t { kDram = 0, kPm = 1 };
constexpr int kNumTiers = 2;

struct TierStats {
  int64_t live_bytes;
  int64_t peak_bytes;
  int64_t allocations;
  int64_t fallbacks;  // pm was full, served from DRAM instead
  int64_t failures;   // pm was full and on_full="error" raised
};

// One allocation or free, recorded while tracing.
struct TraceEvent {
  uint64_t seq;
  uint64_t id;
  uint64_t address;
  uint64_t size;
  uint8_t tier;
  bool is_free;
};

// The calling thread's tier for new allocations (kDram until set).
void set_current_tier(Tier tier) noexcept;
Tier current_tier() noexcept;
// Bytes the calling thread has allocated in `tier` so far (a running total).
int64_t thread_allocated(Tier tier) noexcept;

class TieringAllocator final : public c10::Allocator {
 public:
  static TieringAllocator& instance();

  c10::DataPtr allocate(size_t n) override;
  c10::DeleterFnPtr raw_deleter() const override;
  void copy_data(void* dest, const void* src, std::size_t count) const override;

  // Registers this allocator with PyTorch, serving "pm" from `pm` (this takes
  // over one reference). Not thread-safe, like SetCPUAllocator itself.
  void enable(Backend* pm, bool error_on_full);
  void enable(ArenaBackend* pm, bool error_on_full);
  // Restores the allocator that was registered before enable().
  void disable();
  bool enabled() const { return previous_ != nullptr; }
  std::string pm_description() const;
  // The pm tier's arena layout, if it is a simulated tier's arena.
  std::optional<ArenaLayout> pm_layout() const;

  // Serve `tier`'s allocations from a planned arena (see PlannedBackend)
  // until disable(); its unplanned allocations go to the tier's backend.
  void plan(Tier tier, std::vector<size_t> sizes, std::vector<size_t> offsets, size_t arena_bytes);
  // A forward pass starts: every planned tier restarts its plan.
  void begin_planned_pass();
  // Planned-arena counters of `tier` (all zero when it has no plan).
  PlannedStats planned_stats(Tier tier) const;

  TierStats stats(Tier tier) const;
  void reset_peaks();

  void start_trace();
  std::vector<TraceEvent> stop_trace();
  uint64_t trace_position() const { return trace_seq_.load(std::memory_order_relaxed); }

  // Tier of a block this allocator made, or -1 for any other pointer's deleter.
  static int tier_of(const c10::DataPtr& ptr);

 private:
  struct alignas(64) Counters {
    std::atomic<int64_t> live{0}, peak{0}, allocations{0}, fallbacks{0}, failures{0};
  };
  TieringAllocator() = default;
  static void free_block(void* ptr);
  void* allocate_in(Tier tier, size_t n);
  // Appends an event and returns its sequence number (an allocation's id).
  uint64_t record(Tier tier, uint64_t id, const void* address, size_t size, bool is_free);
  [[noreturn]] void fail_full(size_t n) const;

  std::array<std::atomic<Backend*>, kNumTiers> backends_{};
  std::array<PlannedBackend*, kNumTiers> planned_{};  // the planned wrapper in backends_, if any
  ArenaBackend* pm_arena_ = nullptr;                   // the sim arena under the pm tier, if any
  std::array<Counters, kNumTiers> counters_;
  c10::Allocator* previous_ = nullptr;
  bool error_on_full_ = false;

  std::atomic<bool> tracing_{false};
  std::atomic<uint64_t> trace_seq_{0};
  std::mutex trace_mutex_;
  std::vector<TraceEvent> trace_;
};

}  // namespace torch_tier
