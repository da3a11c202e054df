#include "planner/deep_stack.h"

#include <pthread.h>

#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>

namespace torch_tier::planner {
namespace {

struct Job {
  const std::function<void()>& fn;
  std::exception_ptr error;
};

void* run_job(void* arg) {
  Job& job = *static_cast<Job*>(arg);
  try {
    job.fn();
  } catch (...) {
    job.error = std::current_exception();
  }
  return nullptr;
}

// Owns a pthread_attr_t.
class ThreadAttributes {
 public:
  ThreadAttributes() { pthread_attr_init(&attr_); }
  ~ThreadAttributes() { pthread_attr_destroy(&attr_); }
  ThreadAttributes(const ThreadAttributes&) = delete;
  ThreadAttributes& operator=(const ThreadAttributes&) = delete;
  pthread_attr_t* get() { return &attr_; }

 private:
  pthread_attr_t attr_;
};

void check(int error, const char* what) {
  if (error != 0) throw std::runtime_error(std::string(what) + ": " + std::strerror(error));
}

}  // namespace

void run_with_stack(size_t bytes, const std::function<void()>& fn) {
  ThreadAttributes attributes;
  check(pthread_attr_setstacksize(attributes.get(), bytes), "pthread_attr_setstacksize");
  Job job{fn, nullptr};
  pthread_t thread;
  check(pthread_create(&thread, attributes.get(), run_job, &job), "pthread_create");
  check(pthread_join(thread, nullptr), "pthread_join");
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace torch_tier::planner
