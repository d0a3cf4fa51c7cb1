// A SQLite VFS for connections that keep their rollback journal between
// transactions (journal_mode=PERSIST, see sqlite_driver.cc). Internal to
// applier/.
//
// SQLite's pager closes the journal file when a transaction ends and opens
// it again, with SQLITE_OPEN_CREATE, when the next one begins; the unix VFS
// then syncs the journal's directory at the first sync of every such open,
// so that a journal it may just have created cannot vanish in a power loss
// while the database file is being written. A kept journal is the same file
// each time: once its directory entry is durable, syncing the directory
// again is a device flush that protects nothing.
//
// This VFS forwards everything to the VFS it wraps (the default one), except
// that it opens a main journal without SQLITE_OPEN_CREATE when the file is
// one this process has already made durable: right after a normal open of
// a journal it syncs the journal's directory itself and keeps a descriptor
// of the file, and a later open whose path still leads to that inode (which
// the descriptor keeps from being freed and reused) is the same file.
// Without CREATE the unix VFS does not sync the directory; everything else
// about the open is the same. A journal deleted through this VFS is
// released; one deleted and created again by another connection is a new
// inode and gets the normal open; one that disappeared in between is opened
// the normal way.
#pragma once

#include <sqlite3.h>

namespace migledger {

// The name to pass to sqlite3_open_v2: this VFS over the default one,
// registered (not as the default) on the first call. Thread-safe.
const char* KeptJournalVfs();

// Registers another instance named `name`, wrapping `base` (tests wrap a
// VFS of their own that watches the calls). Never unregistered.
void RegisterKeptJournalVfs(const char* name, sqlite3_vfs* base);

}  // namespace migledger
