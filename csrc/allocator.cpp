#include "allocator.h"

#include <c10/core/CPUAllocator.h>
#include <torch/csrc/Exceptions.h>

#include <cstring>

#include "dram_backend.h"

namespace torch_tier {

namespace {

constexpr uint64_t kMagic = 0x74696572626c6b31ULL;  // "tierblk1"

// Precedes every block handed to PyTorch, so a pointer alone says where it
// came from: DataPtr's data and context are the same pointer (raw_allocate
// asserts that), and frees find their backend without any lookup.
struct alignas(kAlignment) BlockHeader {
  uint64_t magic;
  Backend* backend;
  uint64_t size;
  uint64_t id;
  Tier tier;
};
static_assert(sizeof(BlockHeader) == kAlignment, "header must keep payloads 64-byte aligned");

BlockHeader* header_of(void* payload) {
  return reinterpret_cast<BlockHeader*>(static_cast<char*>(payload) - sizeof(BlockHeader));
}

thread_local Tier t_current_tier = kDram;
thread_local int64_t t_allocated[kNumTiers] = {0, 0};

const char* tier_name(Tier tier) { return tier == kDram ? "dram" : "pm"; }

// Raised to Python as MemoryError by PyTorch's own error translation.
struct TierFullError : torch::PyTorchError {
  using PyTorchError::PyTorchError;
  PyObject* python_type() override { return PyExc_MemoryError; }
};

}  // namespace

void set_current_tier(Tier tier) noexcept { t_current_tier = tier; }
Tier current_tier() noexcept { return t_current_tier; }
int64_t thread_allocated(Tier tier) noexcept { return t_allocated[tier]; }

TieringAllocator& TieringAllocator::instance() {
  // Leaked on purpose: PyTorch requires allocators of static lifetime, and
  // tensors may be freed during interpreter shutdown.
  static TieringAllocator* allocator = new TieringAllocator();
  return *allocator;
}

c10::DataPtr TieringAllocator::allocate(size_t n) {
  if (n == 0) return {nullptr, nullptr, &free_block, c10::Device(c10::DeviceType::CPU)};
  void* payload = allocate_in(t_current_tier, n);
  return {payload, payload, &free_block, c10::Device(c10::DeviceType::CPU)};
}

void* TieringAllocator::allocate_in(Tier tier, size_t n) {
  Backend* backend = backends_[tier].load(std::memory_order_acquire);
  if (!backend) {  // no pm tier configured: everything is DRAM
    tier = kDram;
    backend = &DramBackend::instance();
  }
  void* raw = backend->allocate(n + sizeof(BlockHeader));
  if (!raw && tier == kPm) {
    if (error_on_full_) {
      counters_[kPm].failures.fetch_add(1, std::memory_order_relaxed);
      fail_full(n);
    }
    counters_[kPm].fallbacks.fetch_add(1, std::memory_order_relaxed);
    return allocate_in(kDram, n);
  }
  TORCH_CHECK_WITH(OutOfMemoryError, raw, "torch-tier: DRAM allocation of ", n, " bytes failed");
  if (backend != &DramBackend::instance()) backend->retain();

  auto* header = static_cast<BlockHeader*>(raw);
  *header = BlockHeader{kMagic, backend, n, 0, tier};

  Counters& c = counters_[tier];
  const int64_t live = c.live.fetch_add(n, std::memory_order_relaxed) + n;
  c.allocations.fetch_add(1, std::memory_order_relaxed);
  t_allocated[tier] += n;
  int64_t peak = c.peak.load(std::memory_order_relaxed);
  while (live > peak && !c.peak.compare_exchange_weak(peak, live, std::memory_order_relaxed)) {
  }
  if (tracing_.load(std::memory_order_relaxed)) header->id = record(tier, 0, header + 1, n, false);
  return header + 1;
}

void TieringAllocator::free_block(void* payload) {
  if (!payload) return;
  BlockHeader* header = header_of(payload);
  TORCH_INTERNAL_ASSERT(header->magic == kMagic, "torch-tier: freeing a block it did not allocate");
  TieringAllocator& self = instance();
  const Tier tier = header->tier;
  Backend* backend = header->backend;
  self.counters_[tier].live.fetch_sub(header->size, std::memory_order_relaxed);
  if (header->id && self.tracing_.load(std::memory_order_relaxed))
    self.record(tier, header->id, payload, header->size, true);
  header->magic = 0;
  backend->deallocate(header, header->size + sizeof(BlockHeader));
  if (backend != &DramBackend::instance()) backend->release();
}

void TieringAllocator::fail_full(size_t n) const {
  Backend* pm = backends_[kPm].load(std::memory_order_acquire);
  throw TierFullError("torch-tier: tier 'pm' (" + (pm ? pm->describe() : std::string("none")) +
                      ") is full: cannot allocate " + std::to_string(n) + " bytes with " +
                      std::to_string(counters_[kPm].live.load()) +
                      " bytes live in pm (on_full='error'; use on_full='fallback' to spill to DRAM)");
}

c10::DeleterFnPtr TieringAllocator::raw_deleter() const { return &free_block; }

void TieringAllocator::copy_data(void* dest, const void* src, std::size_t count) const {
  default_copy_data(dest, src, count);
}

void TieringAllocator::enable(Backend* pm, bool error_on_full) {
  TORCH_CHECK(!enabled(), "torch-tier: the allocator is already enabled");
  error_on_full_ = error_on_full;
  backends_[kDram].store(&DramBackend::instance(), std::memory_order_release);
  backends_[kPm].store(pm, std::memory_order_release);
  previous_ = c10::GetCPUAllocator();
  DramBackend::instance().set_caching(true);
  c10::SetCPUAllocator(this, /*priority=*/UINT8_MAX);
}

void TieringAllocator::enable(ArenaBackend* pm, bool error_on_full) {
  enable(static_cast<Backend*>(pm), error_on_full);
  pm_arena_ = pm;
}

std::optional<ArenaLayout> TieringAllocator::pm_layout() const {
  if (!pm_arena_) return std::nullopt;
  return pm_arena_->layout();
}

void TieringAllocator::disable() {
  if (!enabled()) return;
  c10::SetCPUAllocator(previous_, /*priority=*/UINT8_MAX);
  DramBackend::instance().set_caching(false);
  previous_ = nullptr;
  planned_ = {};
  pm_arena_ = nullptr;
  // Live blocks keep their own references; this drops the session's.
  if (Backend* dram = backends_[kDram].exchange(&DramBackend::instance(), std::memory_order_acq_rel);
      dram != &DramBackend::instance())
    dram->release();
  if (Backend* pm = backends_[kPm].exchange(nullptr, std::memory_order_acq_rel)) pm->release();
}

void TieringAllocator::plan(Tier tier, std::vector<size_t> sizes, std::vector<size_t> offsets,
                            size_t arena_bytes) {
  TORCH_CHECK(enabled(), "torch-tier: enable the allocator before planning its arenas");
  TORCH_CHECK(!planned_[tier], "torch-tier: tier ", tier_name(tier), " already has a planned arena");
  Backend* inner = backends_[tier].load(std::memory_order_acquire);
  TORCH_CHECK(inner, "torch-tier: tier ", tier_name(tier), " has no backend to plan in");
  auto* planned = new PlannedBackend(inner, std::move(sizes), std::move(offsets), arena_bytes);
  planned_[tier] = planned;
  backends_[tier].store(planned, std::memory_order_release);
  if (inner != &DramBackend::instance()) inner->release();  // the planned arena holds it now
}

void TieringAllocator::begin_planned_pass() {
  for (PlannedBackend* planned : planned_)
    if (planned) planned->begin();
}

PlannedStats TieringAllocator::planned_stats(Tier tier) const {
  return planned_[tier] ? planned_[tier]->stats() : PlannedStats{0, 0, 0};
}

std::string TieringAllocator::pm_description() const {
  Backend* pm = backends_[kPm].load(std::memory_order_acquire);
  return pm ? pm->describe() : "";
}

TierStats TieringAllocator::stats(Tier tier) const {
  const Counters& c = counters_[tier];
  return {c.live.load(), c.peak.load(), c.allocations.load(), c.fallbacks.load(), c.failures.load()};
}

void TieringAllocator::reset_peaks() {
  for (Counters& c : counters_) c.peak.store(c.live.load());
}

void TieringAllocator::start_trace() {
  std::lock_guard<std::mutex> lock(trace_mutex_);
  trace_.clear();
  trace_.reserve(1 << 16);
  tracing_.store(true);
}

std::vector<TraceEvent> TieringAllocator::stop_trace() {
  tracing_.store(false);
  std::lock_guard<std::mutex> lock(trace_mutex_);
  return std::move(trace_);
}

uint64_t TieringAllocator::record(Tier tier, uint64_t id, const void* address, size_t size,
                                  bool is_free) {
  std::lock_guard<std::mutex> lock(trace_mutex_);
  const uint64_t seq = trace_seq_.fetch_add(1, std::memory_order_relaxed) + 1;
  trace_.push_back({seq, is_free ? id : seq, reinterpret_cast<uint64_t>(address), size, tier, is_free});
  return seq;
}

int TieringAllocator::tier_of(const c10::DataPtr& ptr) {
  if (ptr.get_deleter() != &free_block || !ptr.get()) return -1;
  return header_of(ptr.get())->tier;
}

}  // namespace torch_tier
