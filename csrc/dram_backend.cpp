#include "dram_backend.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

namespace torch_tier {

DramBackend::DramBackend() : cache_(default_cache_capacity()) {}

size_t DramBackend::default_cache_capacity() noexcept {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  const size_t ram = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : 0;
  return std::min(ram / 16, size_t{1} << 30);
}

void* DramBackend::allocate(size_t bytes) noexcept {
  if (bytes >= kCachedMin && caching_.load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(mutex_);
    CachedShape shape;
    if (void* block = cache_.take(bytes, 0, &shape)) return block;
  }
  void* ptr = nullptr;
  return posix_memalign(&ptr, kAlignment, bytes) == 0 ? ptr : nullptr;
}

void DramBackend::deallocate(void* ptr, size_t bytes) noexcept {
  if (bytes >= kCachedMin && caching_.load(std::memory_order_relaxed)) {
    BlockCache::Evicted evicted;
    bool kept;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      kept = caching_.load(std::memory_order_relaxed) && cache_.put(ptr, {bytes, 0, nullptr}, bytes, &evicted);
    }
    free_all(evicted);
    if (kept) return;
  }
  std::free(ptr);
}

void DramBackend::free_all(BlockCache::Evicted& evicted) noexcept {
  evicted.each([](void* block, const CachedShape&) { std::free(block); });
}

void DramBackend::set_caching(bool on) noexcept {
  BlockCache::Evicted evicted;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    caching_.store(on, std::memory_order_relaxed);
    if (!on) evicted = cache_.evict_until(0);
  }
  free_all(evicted);
}

void DramBackend::set_cache_capacity(size_t bytes) noexcept {
  BlockCache::Evicted evicted;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    evicted = cache_.set_capacity(bytes);
  }
  free_all(evicted);
}

BlockCacheStats DramBackend::cache_stats() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return cache_.stats();
}

DramBackend& DramBackend::instance() {
  static DramBackend* dram = new DramBackend();  // leaked on purpose: frees may come at exit
  return *dram;
}

}  // namespace torch_tier
