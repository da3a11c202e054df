#include "dram_backend.h"

#include <cstdlib>
#include <new>

namespace torch_tier {

void* DramBackend::allocate(size_t bytes) noexcept {
  if (bytes >= kCachedMin && caching_.load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (FreeBlock** link = &bins_[bin_of(bytes)]; *link; link = &(*link)->next) {
      if (FreeBlock* block = *link; block->bytes == bytes) {
        *link = block->next;
        cached_ -= bytes;
        return block;
      }
    }
  }
  void* ptr = nullptr;
  return posix_memalign(&ptr, kAlignment, bytes) == 0 ? ptr : nullptr;
}

void DramBackend::deallocate(void* ptr, size_t bytes) noexcept {
  if (bytes >= kCachedMin && caching_.load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (caching_ && bytes <= capacity_) {
      if (cached_ + bytes > capacity_) empty_locked();
      FreeBlock*& head = bins_[bin_of(bytes)];
      head = new (ptr) FreeBlock{head, bytes};
      cached_ += bytes;
      return;
    }
  }
  std::free(ptr);
}

void DramBackend::set_caching(bool on) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  caching_ = on;
  if (!on) empty_locked();
}

void DramBackend::set_cache_capacity(size_t bytes) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  capacity_ = bytes;
  if (cached_ > capacity_) empty_locked();
}

size_t DramBackend::cached_bytes() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return cached_;
}

void DramBackend::empty_locked() noexcept {
  for (FreeBlock*& head : bins_) {
    while (FreeBlock* block = head) {
      head = block->next;
      std::free(block);
    }
  }
  cached_ = 0;
}

DramBackend& DramBackend::instance() {
  static DramBackend* dram = new DramBackend();  // leaked on purpose: frees may come at exit
  return *dram;
}

}  // namespace torch_tier
