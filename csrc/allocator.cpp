#include "allocator.h"

#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <climits>

#include "dram_backend.h"

namespace torch_tier {

namespace {

thread_local Tier t_current_tier = kDram;
thread_local double t_split = 0.0;  // pm share of new blocks' pages; 0: whole blocks in t_current_tier
thread_local int64_t t_allocated[kNumTiers] = {0, 0};
thread_local int64_t t_split_allocated[kNumTiers] = {0, 0};

const char* tier_name(Tier tier) { return tier == kDram ? "dram" : "pm"; }

}  // namespace

// Gives a thread's counters back when the thread exits. Its own thread_local,
// so the fast path's plain pointer needs no construction guard.
struct ThreadCountersHandle {
  TieringAllocator::Counters* counters = nullptr;
  ~ThreadCountersHandle();
};

namespace {
thread_local TieringAllocator::Counters* t_counters = nullptr;
thread_local ThreadCountersHandle t_handle;
}  // namespace

ThreadCountersHandle::~ThreadCountersHandle() {
  if (counters) TieringAllocator::instance().leave(counters);
}

void set_current_tier(Tier tier) noexcept {
  t_current_tier = tier;
  t_split = 0.0;
}
Tier current_tier() noexcept { return t_current_tier; }
void set_current_split(double pm_share) noexcept {
  t_current_tier = kPm;
  t_split = pm_share;
}
double current_split() noexcept { return t_split; }
int64_t thread_allocated(Tier tier) noexcept { return t_allocated[tier]; }
int64_t thread_split_allocated(Tier tier) noexcept { return t_split_allocated[tier]; }

TieringAllocator& TieringAllocator::instance() {
  // Leaked on purpose: PyTorch requires allocators of static lifetime, and
  // tensors may be freed during interpreter shutdown.
  static TieringAllocator* allocator = new TieringAllocator();
  return *allocator;
}

TieringAllocator::TieringAllocator() : split_cache_capacity_(DramBackend::default_cache_capacity()) {
  slots_[kDramSlot].backend.store(&DramBackend::instance());
  tier_slot_[kDram].store(kDramSlot);
  tier_slot_[kPm].store(kNoSlot);
  counters_[0].in_use.store(true);
}

// ---- per-thread counters ---------------------------------------------------

TieringAllocator::Counters& TieringAllocator::my_counters() noexcept {
  if (Counters* mine = t_counters) return *mine;
  std::lock_guard<std::mutex> lock(registry_mutex_);
  Counters* mine = &counters_[0];  // shared, if every entry is taken
  for (int i = 1; i < kMaxThreads; ++i) {
    if (!counters_[i].in_use.load(std::memory_order_relaxed)) {
      counters_[i].in_use.store(true, std::memory_order_relaxed);
      for (auto& high : counters_[i].own_high) high.store(INT64_MIN, std::memory_order_relaxed);  // a new thread's
      if (counters_used_.load(std::memory_order_relaxed) <= i) counters_used_.store(i + 1, std::memory_order_release);
      mine = &counters_[i];
      t_handle.counters = mine;
      break;
    }
  }
  t_counters = mine;
  return *mine;
}

void TieringAllocator::leave(Counters* mine) noexcept {
  std::lock_guard<std::mutex> lock(registry_mutex_);
  Counters& shared = counters_[0];
  auto fold = [](std::atomic<int64_t>& from, std::atomic<int64_t>& to) {
    to.fetch_add(from.exchange(0, std::memory_order_seq_cst), std::memory_order_seq_cst);
  };
  for (int t = 0; t < kNumTiers; ++t) {
    fold(mine->live[t], shared.live[t]);
    fold(mine->allocations[t], shared.allocations[t]);
  }
  fold(mine->fallbacks, shared.fallbacks);
  fold(mine->failures, shared.failures);
  for (int s = 0; s < kMaxBackends; ++s) fold(mine->blocks[s], shared.blocks[s]);
  mine->in_use.store(false, std::memory_order_relaxed);
  t_counters = &shared;  // frees later in this thread's teardown count there
}

int64_t TieringAllocator::sum_live(Tier tier) const noexcept {
  int64_t total = 0;
  const int used = counters_used_.load(std::memory_order_acquire);
  for (int i = 0; i < used; ++i) total += counters_[i].live[tier].load(std::memory_order_relaxed);
  return total;
}

void TieringAllocator::note_peak(Counters& me, Tier tier) noexcept {
  // The tier's live bytes are summed over all threads only when this thread's
  // own live bytes pass their last high: reading the others' counters (lines
  // they keep writing) on every allocation would cost a cache miss per thread.
  // Exact while one thread allocates at a time; with several, the peak is the
  // highest sum seen as each thread reached its own highest.
  const uint64_t epoch = peak_epoch_.load(std::memory_order_relaxed);
  if (me.peak_epoch.load(std::memory_order_relaxed) != epoch) {
    me.peak_epoch.store(epoch, std::memory_order_relaxed);
    for (auto& high : me.own_high) high.store(INT64_MIN, std::memory_order_relaxed);
  }
  const int64_t mine = me.live[tier].load(std::memory_order_relaxed);
  if (mine <= me.own_high[tier].load(std::memory_order_relaxed)) return;
  me.own_high[tier].store(mine, std::memory_order_relaxed);
  const int64_t live = sum_live(tier);
  int64_t peak = peak_[tier].load(std::memory_order_relaxed);
  while (live > peak && !peak_[tier].compare_exchange_weak(peak, live, std::memory_order_relaxed)) {
  }
}

// ---- backend slots and their lifetimes --------------------------------------
//
// A tier's allocation first counts a block against the tier's slot (on the
// thread's own counters), then checks that the tier still uses that slot;
// retire() first stops the tier using the slot, then sums the slot's counts.
// Both sides are sequentially consistent, so either the allocation sees the
// change and backs out, or retire() sees its count and leaves the backend
// alive: a backend is never freed under an allocation. The last free of a
// retired backend's blocks destroys it.

uint8_t TieringAllocator::enter_slot(Counters& me, Tier* tier) noexcept {
  uint8_t slot = tier_slot_[*tier].load(std::memory_order_seq_cst);
  for (;;) {
    if (slot == kNoSlot) {  // no pm tier configured: everything is DRAM
      *tier = kDram;
      slot = tier_slot_[kDram].load(std::memory_order_seq_cst);
      continue;
    }
    if (slot == kDramSlot) return slot;  // immortal: nothing to hold
    me.blocks[slot].fetch_add(1, std::memory_order_seq_cst);
    const uint8_t now = tier_slot_[*tier].load(std::memory_order_seq_cst);
    if (now == slot) return slot;
    release_block(me, slot);
    slot = now;
  }
}

void TieringAllocator::release_block(Counters& me, uint8_t slot) noexcept {
  if (slot == kDramSlot) return;
  me.blocks[slot].fetch_sub(1, std::memory_order_seq_cst);
  if (slots_[slot].retired.load(std::memory_order_seq_cst)) free_slot_if_done(slot);
}

uint8_t TieringAllocator::occupy_slot(Backend* backend) {
  std::lock_guard<std::mutex> lock(registry_mutex_);
  for (int s = 1; s < kMaxBackends; ++s) {
    if (!slots_[s].backend.load(std::memory_order_relaxed)) {
      slots_[s].retired.store(false, std::memory_order_seq_cst);
      if (backend->can_split()) {
        if (!slots_[s].split_cache) slots_[s].split_cache = std::make_unique<SplitCache>();
        slots_[s].split_cache->start(backend, split_cache_capacity_);
      }
      slots_[s].backend.store(backend, std::memory_order_release);
      return static_cast<uint8_t>(s);
    }
  }
  backend->release();
  TORCH_CHECK(false, "torch-tier: ", kMaxBackends - 1, " backends still have live blocks; free some tensors of "
              "earlier sessions first");
}

void TieringAllocator::retire(uint8_t slot) noexcept {
  slots_[slot].retired.store(true, std::memory_order_seq_cst);
  if (slots_[slot].split_cache) slots_[slot].split_cache->stop();  // before the backend can go
  free_slot_if_done(slot);
}

void TieringAllocator::free_slot_if_done(uint8_t slot) noexcept {
  Backend* done = nullptr;
  {
    std::lock_guard<std::mutex> lock(registry_mutex_);
    Backend* backend = slots_[slot].backend.load(std::memory_order_relaxed);
    if (!backend || !slots_[slot].retired.load(std::memory_order_seq_cst)) return;
    int64_t blocks = 0;
    const int used = counters_used_.load(std::memory_order_acquire);
    for (int i = 0; i < used; ++i) blocks += counters_[i].blocks[slot].load(std::memory_order_seq_cst);
    if (blocks != 0) return;
    slots_[slot].backend.store(nullptr, std::memory_order_relaxed);
    slots_[slot].retired.store(false, std::memory_order_relaxed);
    done = backend;
  }
  done->release();  // outside the lock: it may unmap an arena or destroy a memkind kind
}

int TieringAllocator::live_backends() {
  std::lock_guard<std::mutex> lock(registry_mutex_);
  int count = 0;
  for (const Slot& slot : slots_) count += slot.backend.load(std::memory_order_relaxed) != nullptr;
  return count;
}

// ---- allocation and free -----------------------------------------------------

c10::DataPtr TieringAllocator::allocate(size_t n) {
  if (n == 0) return {nullptr, nullptr, &free_block, c10::Device(c10::DeviceType::CPU)};
  TORCH_CHECK_WITH(OutOfMemoryError, n <= BlockMap::kMaxBytes, "torch-tier: cannot allocate ", n,
                   " bytes (more than 2^48)");
  Counters& me = my_counters();
  BlockRecord block{};
  void* ptr = t_split != 0.0 ? allocate_split(me, n, &block) : allocate_in(me, t_current_tier, n, &block);
  const Tier tier = static_cast<Tier>(block.tier);
  Backend* backend = slots_[block.slot].backend.load(std::memory_order_acquire);  // held by our block count
  block.traced = tracing_.load(std::memory_order_relaxed);
  block.profiled = c10::memoryProfilingEnabled();
  if (!map_.insert(ptr, block)) {
    give_back(backend, ptr, block);
    release_block(me, block.slot);
    TORCH_CHECK_WITH(OutOfMemoryError, false, "torch-tier: no memory for the block map's node of a ", n,
                     "-byte block");
  }
  count_live(me, backend, ptr, block, 1);
  if (block.traced) record(tier, ptr, n, false);
  if (block.profiled) report_to_profiler(ptr, static_cast<int64_t>(n));
  return {ptr, ptr, &free_block, c10::Device(c10::DeviceType::CPU)};
}

void* TieringAllocator::allocate_in(Counters& me, Tier tier, size_t n, BlockRecord* record) {
  const uint8_t slot = enter_slot(me, &tier);
  Backend* backend = slots_[slot].backend.load(std::memory_order_acquire);
  void* ptr = backend->allocate(n);
  if (!ptr && tier == kPm && drain_split_cache(slot)) ptr = backend->allocate(n);
  if (!ptr) {
    release_block(me, slot);
    if (tier == kPm) return pm_full(me, n, record);
    TORCH_CHECK_WITH(OutOfMemoryError, false, "torch-tier: DRAM allocation of ", n, " bytes failed");
  }
  *record = BlockRecord{n, slot, tier, false, false};
  return ptr;
}

void* TieringAllocator::allocate_split(Counters& me, size_t n, BlockRecord* record) {
  const size_t pages = (n + kPageBytes - 1) / kPageBytes;
  const auto dram_pages = static_cast<size_t>((1.0 - t_split) * static_cast<double>(pages) + 0.5);
  if (dram_pages == 0 || dram_pages >= pages) return allocate_in(me, dram_pages ? kDram : kPm, n, record);
  Tier tier = kPm;
  const uint8_t slot = enter_slot(me, &tier);
  if (tier != kPm) return allocate_in(me, kDram, n, record);  // no pm tier: everything is DRAM
  Backend* pm = slots_[slot].backend.load(std::memory_order_acquire);
  if (!pm->can_split()) {
    release_block(me, slot);
    TORCH_CHECK(false, "torch-tier: tier 'pm' (", pm->describe(), ") cannot place split tensors (a share of a "
                "tensor's pages in each tier); the sim arena and memkind's heaps can, planned arenas cannot");
  }
  const size_t dram_bytes = dram_pages * kPageBytes;
  Backend::SplitParts parts = slots_[slot].split_cache->take(n, dram_bytes);
  if (!parts.block) parts = pm->allocate_split(n, dram_bytes);
  if (!parts.block && drain_split_cache(slot)) parts = pm->allocate_split(n, dram_bytes);
  if (!parts.block) {
    release_block(me, slot);
    return pm_full(me, n, record);
  }
  *record = BlockRecord{n, slot, kPm, false, false, dram_bytes, parts.pm};
  return parts.block;
}

void* TieringAllocator::pm_full(Counters& me, size_t n, BlockRecord* record) {
  if (error_on_full_.load(std::memory_order_relaxed)) {
    me.failures.fetch_add(1, std::memory_order_relaxed);
    fail_full(n);
  }
  me.fallbacks.fetch_add(1, std::memory_order_relaxed);
  return allocate_in(me, kDram, n, record);
}

void TieringAllocator::count_live(Counters& me, Backend* backend, void* ptr, const BlockRecord& block,
                                  int64_t sign) noexcept {
  const Tier tier = static_cast<Tier>(block.tier);
  if (!block.dram_bytes) {
    me.live[tier].fetch_add(sign * static_cast<int64_t>(backend->block_bytes(ptr, block.bytes)),
                            std::memory_order_relaxed);
    if (sign < 0) return;
    me.allocations[tier].fetch_add(1, std::memory_order_relaxed);
    t_allocated[tier] += static_cast<int64_t>(block.bytes);
    note_peak(me, tier);
    return;
  }
  // A split block: its DRAM pages in DRAM, its other pages in pm; one allocation in each.
  const auto dram = static_cast<int64_t>(block.dram_bytes);
  const auto pages = static_cast<int64_t>(round_up(block.bytes, kPageBytes));
  me.live[kDram].fetch_add(sign * dram, std::memory_order_relaxed);
  me.live[kPm].fetch_add(sign * (pages - dram), std::memory_order_relaxed);
  if (sign < 0) return;
  for (const Tier part : {kDram, kPm}) me.allocations[part].fetch_add(1, std::memory_order_relaxed);
  for (int64_t* counts : {t_allocated, t_split_allocated}) {
    counts[kDram] += dram;
    counts[kPm] += static_cast<int64_t>(block.bytes) - dram;
  }
  note_peak(me, kDram);
  note_peak(me, kPm);
}

void TieringAllocator::give_back(Backend* backend, void* ptr, const BlockRecord& block) noexcept {
  if (block.dram_bytes) slots_[block.slot].split_cache->put(backend, {ptr, block.pm}, block.bytes, block.dram_bytes);
  else backend->deallocate(ptr, block.bytes);
}

bool TieringAllocator::drain_split_cache(uint8_t slot) noexcept {
  const std::unique_ptr<SplitCache>& cache = slots_[slot].split_cache;
  return cache && cache->drain();
}

void TieringAllocator::free_block(void* ptr) {
  if (!ptr) return;
  TieringAllocator& self = instance();
  BlockRecord block;
  // Out of the map before the backend can hand the address out again.
  if (!self.map_.erase(ptr, &block)) {
    // Not ours: oneDNN's glue frees its buffers with whichever CPU allocator is registered at
    // the time (c10::GetAllocator(CPU)->raw_deallocate), so a buffer the previous allocator
    // made before enable() may come here. Hand it back to that allocator.
    const c10::DeleterFnPtr foreign = self.foreign_deleter_.load(std::memory_order_acquire);
    TORCH_INTERNAL_ASSERT(foreign && foreign != &free_block, "torch-tier: freeing a block it did not allocate");
    return foreign(ptr);
  }
  const Tier tier = static_cast<Tier>(block.tier);
  Backend* backend = self.slots_[block.slot].backend.load(std::memory_order_acquire);
  if (block.traced && self.tracing_.load(std::memory_order_relaxed)) self.record(tier, ptr, block.bytes, true);
  if (block.profiled) self.report_to_profiler(ptr, -static_cast<int64_t>(block.bytes));
  Counters& me = self.my_counters();
  self.count_live(me, backend, ptr, block, -1);  // block_bytes may read the block: before it goes back
  self.give_back(backend, ptr, block);
  self.release_block(me, block.slot);
}

void TieringAllocator::report_to_profiler(void* ptr, int64_t bytes) noexcept {
  // As c10's own CPU allocator does; the event has no field for the tier.
  const int64_t total = sum_live(kDram) + sum_live(kPm);
  c10::reportMemoryUsageToProfiler(ptr, bytes, static_cast<size_t>(std::max<int64_t>(total, 0)), 0,
                                   c10::Device(c10::DeviceType::CPU));
}

void TieringAllocator::fail_full(size_t n) {
  const std::string pm = pm_description();
  TORCH_CHECK_WITH(OutOfMemoryError, false, "torch-tier: tier 'pm' (", pm.empty() ? "none" : pm,
                   ") is full: cannot allocate ", n, " bytes with ", sum_live(kPm),
                   " bytes live in pm (on_full='error'; use on_full='fallback' to spill to DRAM)");
}

c10::DeleterFnPtr TieringAllocator::raw_deleter() const { return &free_block; }

void TieringAllocator::copy_data(void* dest, const void* src, std::size_t count) const {
  default_copy_data(dest, src, count);
}

// ---- sessions ------------------------------------------------------------------

void TieringAllocator::enable(Backend* pm, bool error_on_full) {
  if (enabled_) {
    pm->release();
    TORCH_CHECK(false, "torch-tier: the allocator is already enabled");
  }
  const uint8_t slot = occupy_slot(pm);
  error_on_full_.store(error_on_full, std::memory_order_relaxed);
  tier_slot_[kDram].store(kDramSlot, std::memory_order_seq_cst);
  tier_slot_[kPm].store(slot, std::memory_order_seq_cst);
  DramBackend::instance().set_caching(true);
  previous_ = c10::GetCPUAllocator();
  if (previous_->raw_deleter() != &free_block) foreign_deleter_.store(previous_->raw_deleter(), std::memory_order_release);
  previous_priority_ = register_at_current_priority();
  enabled_ = true;
}

uint8_t TieringAllocator::register_at_current_priority() {
  // c10 keeps the CPU allocator's priority to itself, and SetCPUAllocator
  // replaces the allocator only at that priority or above: the lowest
  // priority that takes is the current one. Registering at it (not above)
  // leaves later registrations their say, and restoring at it leaves the
  // priority as it was.
  for (int priority = 0; priority < UINT8_MAX; ++priority) {
    c10::SetCPUAllocator(this, static_cast<uint8_t>(priority));
    if (c10::GetCPUAllocator() == this) return static_cast<uint8_t>(priority);
  }
  c10::SetCPUAllocator(this, UINT8_MAX);
  return UINT8_MAX;
}

uint8_t TieringAllocator::cpu_allocator_priority() {
  if (enabled_ && c10::GetCPUAllocator() == this) return previous_priority_;
  c10::Allocator* current = c10::GetCPUAllocator();
  const uint8_t priority = register_at_current_priority();
  c10::SetCPUAllocator(current, priority);
  return priority;
}

void TieringAllocator::enable(ArenaBackend* pm, bool error_on_full) {
  enable(static_cast<Backend*>(pm), error_on_full);
  pm_arena_ = pm;
}

void TieringAllocator::disable() {
  if (!enabled_) return;
  if (c10::GetCPUAllocator() == this) c10::SetCPUAllocator(previous_, previous_priority_);
  enabled_ = false;
  previous_ = nullptr;
  planned_ = {};
  pm_arena_ = nullptr;
  for (int t = 0; t < kNumTiers; ++t) {
    const uint8_t old = tier_slot_[t].exchange(t == kDram ? kDramSlot : kNoSlot, std::memory_order_seq_cst);
    if (old != kDramSlot && old != kNoSlot) retire(old);  // live blocks keep it until they are freed
  }
  DramBackend::instance().set_caching(false);
}

std::optional<ArenaLayout> TieringAllocator::pm_layout() const {
  if (!pm_arena_) return std::nullopt;
  return pm_arena_->layout();
}

std::string TieringAllocator::pm_description() const {
  const uint8_t slot = tier_slot_[kPm].load(std::memory_order_acquire);
  if (slot == kNoSlot) return "";
  Backend* pm = slots_[slot].backend.load(std::memory_order_acquire);
  return pm ? pm->describe() : "";
}

void TieringAllocator::plan(Tier tier, std::vector<size_t> sizes, std::vector<size_t> offsets,
                            size_t arena_bytes) {
  TORCH_CHECK(enabled_, "torch-tier: enable the allocator before planning its arenas");
  TORCH_CHECK(!planned_[tier], "torch-tier: tier ", tier_name(tier), " already has a planned arena");
  const uint8_t old = tier_slot_[tier].load(std::memory_order_seq_cst);
  TORCH_CHECK(old != kNoSlot, "torch-tier: tier ", tier_name(tier), " has no backend to plan in");
  Backend* inner = slots_[old].backend.load(std::memory_order_acquire);
  auto* planned = new PlannedBackend(inner, std::move(sizes), std::move(offsets), arena_bytes, tier_alignment(tier));
  const uint8_t slot = occupy_slot(planned);
  planned_[tier] = planned;
  tier_slot_[tier].store(slot, std::memory_order_seq_cst);
  if (old != kDramSlot) retire(old);  // the planned arena holds its own reference to it
}

void TieringAllocator::begin_planned_pass() {
  for (PlannedBackend* planned : planned_)
    if (planned) planned->begin();
}

PlannedStats TieringAllocator::planned_stats(Tier tier) const {
  return planned_[tier] ? planned_[tier]->stats() : PlannedStats{0, 0, 0};
}

// ---- stats and traces ------------------------------------------------------------

TierStats TieringAllocator::stats(Tier tier) {
  std::lock_guard<std::mutex> lock(registry_mutex_);
  TierStats out{0, peak_[tier].load(std::memory_order_relaxed), 0, 0, 0};
  const int used = counters_used_.load(std::memory_order_acquire);
  for (int i = 0; i < used; ++i) {
    out.live_bytes += counters_[i].live[tier].load(std::memory_order_relaxed);
    out.allocations += counters_[i].allocations[tier].load(std::memory_order_relaxed);
    if (tier == kPm) {
      out.fallbacks += counters_[i].fallbacks.load(std::memory_order_relaxed);
      out.failures += counters_[i].failures.load(std::memory_order_relaxed);
    }
  }
  out.peak_bytes = std::max(out.peak_bytes, out.live_bytes);
  return out;
}

BlockCacheStats TieringAllocator::split_cache_stats() {
  std::lock_guard<std::mutex> lock(registry_mutex_);
  BlockCacheStats out{0, 0, split_cache_capacity_, 0, 0};
  for (const Slot& slot : slots_) {
    if (!slot.split_cache) continue;
    const BlockCacheStats one = slot.split_cache->stats();
    out.cached_bytes += one.cached_bytes;
    out.cached_dram_bytes += one.cached_dram_bytes;
    out.hits += one.hits;
    out.evictions += one.evictions;
  }
  return out;
}

void TieringAllocator::set_split_cache_capacity(size_t bytes) {
  std::lock_guard<std::mutex> lock(registry_mutex_);
  split_cache_capacity_ = bytes;
  for (Slot& slot : slots_)
    if (slot.split_cache) slot.split_cache->set_capacity(bytes);
}

void TieringAllocator::reset_peaks() {
  peak_epoch_.fetch_add(1, std::memory_order_relaxed);
  for (int t = 0; t < kNumTiers; ++t) peak_[t].store(sum_live(static_cast<Tier>(t)), std::memory_order_relaxed);
}

void TieringAllocator::start_trace() {
  std::lock_guard<std::mutex> lock(trace_mutex_);
  trace_.clear();
  trace_ids_.clear();
  trace_.reserve(1 << 16);
  tracing_.store(true);
}

std::vector<TraceEvent> TieringAllocator::stop_trace() {
  tracing_.store(false);
  std::lock_guard<std::mutex> lock(trace_mutex_);
  trace_ids_.clear();
  return std::move(trace_);
}

uint64_t TieringAllocator::record(Tier tier, const void* address, size_t size, bool is_free) {
  std::lock_guard<std::mutex> lock(trace_mutex_);
  const auto key = reinterpret_cast<uint64_t>(address);
  uint64_t id = 0;
  if (is_free) {
    const auto it = trace_ids_.find(key);
    if (it == trace_ids_.end()) return 0;  // allocated before this trace began
    id = it->second;
    trace_ids_.erase(it);
  }
  const uint64_t seq = trace_seq_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (!is_free) trace_ids_[key] = id = seq;
  trace_.push_back({seq, id, key, size, tier, is_free});
  return seq;
}

int TieringAllocator::tier_of(const c10::DataPtr& ptr) {
  BlockRecord record;
  if (ptr.get_deleter() != &free_block || !ptr.get() || !instance().map_.find(ptr.get(), &record)) return -1;
  return record.dram_bytes ? kSplitTier : record.tier;
}

std::array<uint64_t, kNumTiers> TieringAllocator::tier_bytes(const c10::DataPtr& ptr) {
  BlockRecord record;
  if (ptr.get_deleter() != &free_block || !ptr.get() || !instance().map_.find(ptr.get(), &record)) return {0, 0};
  if (record.dram_bytes) return {record.dram_bytes, round_up(record.bytes, kPageBytes) - record.dram_bytes};
  return record.tier == kDram ? std::array<uint64_t, kNumTiers>{record.bytes, 0}
                              : std::array<uint64_t, kNumTiers>{0, record.bytes};
}

}  // namespace torch_tier
