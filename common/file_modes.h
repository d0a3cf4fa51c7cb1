// File modes: everything migledger writes for itself (the ledger, exports)
// is private to the user; databases it creates keep the user's usual mode.
#pragma once

#include <sys/types.h>

namespace migledger {

// Sets the process umask to 077 and remembers the previous one. Called once
// at start-up, before the ledger is opened (RocksDB creates files from its
// own threads, so the umask is the one way to make them all 0600).
void MakeNewFilesPrivate();
// The umask the process started with (022 when MakeNewFilesPrivate was not
// called).
mode_t OriginalUmask();

}  // namespace migledger
