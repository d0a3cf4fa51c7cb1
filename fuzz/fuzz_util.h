// Helpers shared by the fuzz targets: invariant checks that crash loudly (so
// libFuzzer keeps the input) and a scratch directory per process.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

// Aborts with the failed invariant; libFuzzer reports it as a crash.
#define FUZZ_CHECK(cond)                                              \
  do {                                                                \
    if (!(cond)) {                                                    \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, \
                   __LINE__, #cond);                                  \
      std::abort();                                                   \
    }                                                                 \
  } while (0)

namespace migledger_fuzz {

inline std::string_view AsView(const uint8_t* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

// A fresh directory for this process, on tmpfs when there is one (/dev/shm),
// removed at exit. Fuzz targets touch files on every input, so a RAM-backed
// directory keeps them fast and spares the disk.
inline const std::string& ScratchDir() {
  // Never destroyed: the atexit handler below needs it after static
  // destructors have started to run.
  static const std::string* const dir = [] {
    std::string base = "/tmp";
    if (const char* t = std::getenv("MIGLEDGER_FUZZ_TMPDIR")) {
      base = t;
    } else if (access("/dev/shm", W_OK) == 0) {
      base = "/dev/shm";
    }
    std::string tmpl = base + "/migledger-fuzz-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    auto* d = new std::string(tmpl);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(ScratchDir(), ec);
    });
    return d;
  }();
  return *dir;
}

}  // namespace migledger_fuzz
