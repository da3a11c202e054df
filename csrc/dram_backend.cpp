#include "dram_backend.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <new>

namespace torch_tier {

DramBackend::DramBackend() : capacity_(default_cache_capacity()) {}

size_t DramBackend::default_cache_capacity() noexcept {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  const size_t ram = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : 0;
  return std::min(ram / 16, size_t{1} << 30);
}

void* DramBackend::allocate(size_t bytes) noexcept {
  if (bytes >= kCachedMin && caching_.load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (CachedBlock* block = bins_[bin_of(bytes)]; block; block = block->bin_next) {
      if (block->bytes == bytes) {
        unlink(block);
        ++hits_;
        return block;
      }
    }
  }
  void* ptr = nullptr;
  return posix_memalign(&ptr, kAlignment, bytes) == 0 ? ptr : nullptr;
}

void DramBackend::deallocate(void* ptr, size_t bytes) noexcept {
  if (bytes >= kCachedMin && caching_.load(std::memory_order_relaxed)) {
    CachedBlock* evicted = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (caching_.load(std::memory_order_relaxed) && bytes <= capacity_) {
        evicted = evict_until(capacity_ - bytes);
        auto* block = new (ptr) CachedBlock{nullptr, bins_[bin_of(bytes)], newest_, nullptr, bytes};
        if (block->bin_next) block->bin_next->bin_prev = block;
        bins_[bin_of(bytes)] = block;
        (newest_ ? newest_->newer : oldest_) = block;
        newest_ = block;
        cached_ += bytes;
        ptr = nullptr;
      }
    }
    free_chain(evicted);
    if (!ptr) return;
  }
  std::free(ptr);
}

void DramBackend::unlink(CachedBlock* block) noexcept {
  (block->bin_prev ? block->bin_prev->bin_next : bins_[bin_of(block->bytes)]) = block->bin_next;
  if (block->bin_next) block->bin_next->bin_prev = block->bin_prev;
  (block->older ? block->older->newer : oldest_) = block->newer;
  (block->newer ? block->newer->older : newest_) = block->older;
  cached_ -= block->bytes;
}

DramBackend::CachedBlock* DramBackend::evict_until(size_t keep) noexcept {
  CachedBlock* chain = nullptr;
  while (oldest_ && cached_ > keep) {
    CachedBlock* victim = oldest_;
    unlink(victim);
    victim->newer = chain;
    chain = victim;
    ++evictions_;
  }
  return chain;
}

void DramBackend::free_chain(CachedBlock* chain) noexcept {
  while (chain) {
    CachedBlock* next = chain->newer;
    std::free(chain);
    chain = next;
  }
}

void DramBackend::set_caching(bool on) noexcept {
  CachedBlock* evicted = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    caching_.store(on, std::memory_order_relaxed);
    if (!on) evicted = evict_until(0);
  }
  free_chain(evicted);
}

void DramBackend::set_cache_capacity(size_t bytes) noexcept {
  CachedBlock* evicted = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    capacity_ = bytes;
    evicted = evict_until(bytes);
  }
  free_chain(evicted);
}

DramCacheStats DramBackend::cache_stats() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return {cached_, capacity_, hits_, evictions_};
}

DramBackend& DramBackend::instance() {
  static DramBackend* dram = new DramBackend();  // leaked on purpose: frees may come at exit
  return *dram;
}

}  // namespace torch_tier
