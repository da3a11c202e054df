// A checking shim for torch-tier's memkind calls (README: Building with sanitizers): every
// allocation and free the memkind backend makes goes through it, and a free of a pointer that is
// not live from memkind (a double free, or a foreign pointer), or to another kind than the one
// it came from, aborts with a message. memkind's jemalloc heap is invisible to ASan and TSan.
// Build: gcc -O2 -shared -fPIC -o memkind_shim.so tests/sanitizers/memkind_shim.c -lpthread
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#define CAP (1u << 22)
static uintptr_t keys[CAP]; static void* kinds[CAP];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int (*real_memalign)(void*, void**, size_t, size_t);
static void (*real_free)(void*, void*);
static unsigned long n_alloc, n_free;
void shim_init(void* memalign, void* fr) { real_memalign = memalign; real_free = fr; }
static size_t slot(uintptr_t p) { size_t h = (p >> 6) * 0x9E3779B97F4A7C15ull; return h & (CAP - 1); }
int shim_posix_memalign(void* kind, void** out, size_t align, size_t size) {
  int rc = real_memalign(kind, out, align, size);
  if (rc == 0) {
    pthread_mutex_lock(&mu);
    uintptr_t p = (uintptr_t)*out; size_t i = slot(p);
    while (keys[i] && keys[i] != (uintptr_t)-1) {
      if (keys[i] == p) { fprintf(stderr, "SHIM: memkind returned live pointer %p again\n", *out); abort(); }
      i = (i + 1) & (CAP - 1);
    }
    keys[i] = p; kinds[i] = kind; n_alloc++;
    pthread_mutex_unlock(&mu);
  }
  return rc;
}
void shim_free(void* kind, void* ptr) {
  if (!ptr) return;
  pthread_mutex_lock(&mu);
  uintptr_t p = (uintptr_t)ptr; size_t i = slot(p);
  while (keys[i] && keys[i] != p) i = (i + 1) & (CAP - 1);
  if (!keys[i]) { fprintf(stderr, "SHIM: free of %p (kind %p), not live from memkind (double free?)\n", ptr, kind); abort(); }
  if (kinds[i] != kind) { fprintf(stderr, "SHIM: free of %p to kind %p, allocated from kind %p\n", ptr, kind, kinds[i]); abort(); }
  keys[i] = (uintptr_t)-1; n_free++;
  pthread_mutex_unlock(&mu);
  real_free(kind, ptr);
}
unsigned long shim_allocs(void) { return n_alloc; }
unsigned long shim_frees(void) { return n_free; }
