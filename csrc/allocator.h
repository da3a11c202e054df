// The tiering CPU allocator: registered with c10::SetCPUAllocator while a
// torch-tier session is enabled. Each allocation is served by the calling
// thread's current tier; each free goes back to the backend that served it,
// whatever the current tier is, also after disable.
//
// Blocks carry no header: an out-of-band BlockMap records each block's
// backend, size and tier by address. Backends sit in a small table of slots;
// a tier names its current slot. Each thread counts its own allocations,
// bytes and live blocks per slot (summed on read), so the allocation path
// writes only the calling thread's own cache lines, the block map's record
// and the backend's own state. A backend a tier no longer uses is destroyed
// once its last block is freed (see retire()).
#pragma once
#include <c10/core/Allocator.h>

#include <array>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "arena_backend.h"
#include "backend.h"
#include "block_map.h"
#include "planned_backend.h"
#include "split_cache.h"

namespace torch_tier {

enum Tier : uint8_t { kDram = 0, kPm = 1 };
constexpr int kNumTiers = 2;
// The alignment of the tier's blocks, planned ones included.
constexpr size_t tier_alignment(Tier tier) { return tier == kPm ? kPmAlignment : kAlignment; }
constexpr int kSplitTier = 2;  // tier_of a split block: some pages in each tier

struct TierStats {
  int64_t live_bytes;  // bytes the tier's live blocks occupy (Backend::block_bytes)
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
  uint64_t size;  // as requested
  uint8_t tier;
  bool is_free;
};

// The calling thread's tier for new allocations (kDram until set).
void set_current_tier(Tier tier) noexcept;
Tier current_tier() noexcept;
// New allocations of the calling thread split: `pm_share` (0 < pm_share < 1)
// of each block's pages in pm, its first pages in DRAM. Of a block of P
// pages (4 KiB), round((1 - pm_share) * P) (halves up) are DRAM pages; a
// block that rounds to none or all is whole in that tier. set_current_tier
// ends it.
void set_current_split(double pm_share) noexcept;
// The calling thread's split share, 0 when it allocates whole blocks.
double current_split() noexcept;
// Bytes (as requested) the calling thread has allocated in `tier` so far (a running total).
int64_t thread_allocated(Tier tier) noexcept;
// Of those, the bytes of split blocks' parts in `tier` (the emulated tier charges a split
// block's parts as one stream served by both tiers at once).
int64_t thread_split_allocated(Tier tier) noexcept;

class TieringAllocator final : public c10::Allocator {
 public:
  static constexpr int kMaxBackends = 64;   // backends with live blocks at once
  static constexpr int kMaxThreads = 1024;  // threads with their own counters at once; more share one set

  static TieringAllocator& instance();

  // One thread's counters (public only for the thread_local that points to
  // them); index 0 is shared (threads past kMaxThreads, and
  // the totals of threads that have exited). Written with RMWs on the
  // owner's own cache lines; read (summed) by stats and lifetime checks.
  struct alignas(64) Counters {
    std::atomic<int64_t> live[kNumTiers];
    std::atomic<int64_t> allocations[kNumTiers];
    std::atomic<int64_t> fallbacks, failures;
    std::atomic<int64_t> blocks[kMaxBackends];  // live blocks per backend slot
    std::atomic<int64_t> own_high[kNumTiers];   // live[t] when this thread last summed all threads' (owner only)
    std::atomic<uint64_t> peak_epoch;           // reset_peaks() calls seen (owner only)
    std::atomic<bool> in_use;
  };

  c10::DataPtr allocate(size_t n) override;
  c10::DeleterFnPtr raw_deleter() const override;
  void copy_data(void* dest, const void* src, std::size_t count) const override;

  // Registers this allocator with PyTorch at the CPU allocator's current
  // priority, serving "pm" from `pm` (this takes over the caller's
  // reference). Not thread-safe, like SetCPUAllocator itself.
  void enable(Backend* pm, bool error_on_full);
  void enable(ArenaBackend* pm, bool error_on_full);
  // Restores the allocator, and priority, registered before enable() (unless
  // another registered over this one meanwhile). Allocations racing with it
  // are served either by the session's tiers or by DRAM, never by a freed backend.
  void disable();
  bool enabled() const { return enabled_; }
  // The CPU allocator's priority in c10 now (found by probing, restored as it was).
  uint8_t cpu_allocator_priority();
  std::string pm_description() const;
  // The pm tier's arena layout, if it is an arena (the simulated tier's, or a NUMA node's).
  std::optional<ArenaLayout> pm_layout() const;

  // Serve `tier`'s allocations from a planned arena (see PlannedBackend)
  // until disable(); its unplanned allocations go to the tier's backend.
  void plan(Tier tier, std::vector<size_t> sizes, std::vector<size_t> offsets, size_t arena_bytes);
  // A forward pass starts: every planned tier restarts its plan.
  void begin_planned_pass();
  // Planned-arena counters of `tier` (all zero when it has no plan).
  PlannedStats planned_stats(Tier tier) const;

  TierStats stats(Tier tier);
  // The split caches' blocks (all slots'; only the pm tier's current one holds any).
  BlockCacheStats split_cache_stats();
  // At most `bytes` of freed split blocks wait for reuse (default: the DRAM cache's default).
  void set_split_cache_capacity(size_t bytes);
  void reset_peaks();
  // Backends still alive: the tiers' current ones and retired ones with live blocks.
  int live_backends();

  void start_trace();
  std::vector<TraceEvent> stop_trace();
  uint64_t trace_position() const { return trace_seq_.load(std::memory_order_relaxed); }

  // Tier of a block this allocator made (kSplitTier for a split one), or -1
  // for any other pointer's deleter.
  static int tier_of(const c10::DataPtr& ptr);
  // Bytes of a block this allocator made in each tier: a split block's pages
  // (dram_bytes and the rest of its pages), a whole one's request in its
  // tier; {0, 0} for any other pointer.
  static std::array<uint64_t, kNumTiers> tier_bytes(const c10::DataPtr& ptr);

 private:
  static constexpr uint8_t kDramSlot = 0;
  static constexpr uint8_t kNoSlot = 0xFF;

  struct Slot {
    std::atomic<Backend*> backend{nullptr};
    std::atomic<bool> retired{false};
    // Freed split blocks of a backend that can split: made when such a backend
    // first occupies the slot (before the backend is published), kept for the
    // slot's later backends; started and stopped with the slot's use.
    std::unique_ptr<SplitCache> split_cache;
  };
  friend struct ThreadCountersHandle;

  TieringAllocator();
  static void free_block(void* ptr);
  Counters& my_counters() noexcept;
  void leave(Counters* counters) noexcept;  // a thread exits: fold its counters into the shared set
  // Holds a block count on the tier's current slot (or DRAM's); returns the slot.
  uint8_t enter_slot(Counters& me, Tier* tier) noexcept;
  void release_block(Counters& me, uint8_t slot) noexcept;
  void* allocate_in(Counters& me, Tier tier, size_t n, BlockRecord* record);
  // A block of the calling thread's split share (whole when it rounds to one tier).
  void* allocate_split(Counters& me, size_t n, BlockRecord* record);
  // pm could not serve `n` bytes: raise (on_full="error") or serve them from DRAM.
  void* pm_full(Counters& me, size_t n, BlockRecord* record);
  // Counts a new block (`sign` 1) or a freed one (-1) in the tiers' live bytes.
  void count_live(Counters& me, Backend* backend, void* ptr, const BlockRecord& block, int64_t sign) noexcept;
  // A freed block goes back to its backend, a split one through its slot's split cache.
  void give_back(Backend* backend, void* ptr, const BlockRecord& block) noexcept;
  // pm failed an allocation: empties its slot's split cache; false if it held nothing.
  bool drain_split_cache(uint8_t slot) noexcept;
  void note_peak(Counters& me, Tier tier) noexcept;
  int64_t sum_live(Tier tier) const noexcept;
  uint8_t occupy_slot(Backend* backend);
  // The tier stops using `slot`; its backend goes when its last block does.
  void retire(uint8_t slot) noexcept;
  void free_slot_if_done(uint8_t slot) noexcept;
  void report_to_profiler(void* ptr, int64_t bytes) noexcept;
  // Registers this allocator at the CPU allocator's current priority; returns it.
  uint8_t register_at_current_priority();
  // Appends an event and returns its sequence number (an allocation's id).
  uint64_t record(Tier tier, const void* address, size_t size, bool is_free);
  [[noreturn]] void fail_full(size_t n);

  BlockMap map_;
  std::array<Slot, kMaxBackends> slots_{};
  std::array<std::atomic<uint8_t>, kNumTiers> tier_slot_{};
  std::array<Counters, kMaxThreads> counters_{};
  std::atomic<int> counters_used_{1};  // entries [0, counters_used_) may be in use
  std::array<std::atomic<int64_t>, kNumTiers> peak_{};
  std::atomic<uint64_t> peak_epoch_{0};  // bumped by reset_peaks()
  std::mutex registry_mutex_;          // slots' lifetimes, threads joining and leaving, stats
  size_t split_cache_capacity_;        // under registry_mutex_

  std::array<PlannedBackend*, kNumTiers> planned_{};  // the planned wrapper in use, if any
  ArenaBackend* pm_arena_ = nullptr;                   // the sim arena under the pm tier, if any
  c10::Allocator* previous_ = nullptr;
  std::atomic<c10::DeleterFnPtr> foreign_deleter_{nullptr};  // the previous allocator's, for its blocks freed here
  uint8_t previous_priority_ = 0;
  bool enabled_ = false;
  std::atomic<bool> error_on_full_{false};

  std::atomic<bool> tracing_{false};
  std::atomic<uint64_t> trace_seq_{0};
  std::mutex trace_mutex_;
  std::vector<TraceEvent> trace_;
  std::unordered_map<uint64_t, uint64_t> trace_ids_;  // live traced block address -> its allocation's id
};

}  // namespace torch_tier
