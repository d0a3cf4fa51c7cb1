#include "common/file_modes.h"

#include <sys/stat.h>

namespace migledger {
namespace {
mode_t original_umask = 022;
bool changed = false;
}  // namespace

void MakeNewFilesPrivate() {
  if (changed) return;
  original_umask = ::umask(077);
  changed = true;
}

mode_t OriginalUmask() { return original_umask; }

}  // namespace migledger
