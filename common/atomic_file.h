// Writing a file whole or not at all, without following anyone's symlink.
//
// Every file migledger writes outside its ledger (migledger.toml, migration
// files, exports) goes through WriteFileAtomically: the content goes to a
// new file with a unique name in the destination's directory (mkostemp:
// O_CREAT|O_EXCL, so nothing planted there, a symlink included, is opened or
// followed), is fsynced, and is then renamed to its name, and the directory
// is fsynced. Readers see the old file or the new one, never a part; two
// writers to one path leave one of their files, never a mix; a symlink at
// the destination is replaced, never written through. A kill can leave the
// temporary file (`.<name>.tmp-XXXXXX`) behind, never a torn destination.
#pragma once

#include <sys/types.h>

#include <cstdio>
#include <functional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace migledger {

struct WriteFileOptions {
  // The file's permission bits, exactly (the umask does not apply).
  mode_t mode = 0600;
  // false: never replace what is there (a file, a symlink, anything): the
  // write fails with kInvalidInput "... already exists" and changes nothing.
  bool replace = true;
};

// Writes the file with what `write` puts into the stream it is given (the
// temporary file). A non-OK status from `write` or a failed write, sync or
// rename removes the temporary file and leaves `path` as it was. Errors of
// the file system are kIo and name `path`.
Status WriteFileAtomically(const std::string& path,
                           const std::function<Status(std::FILE*)>& write,
                           const WriteFileOptions& options = {});

// The same with the whole content at hand.
Status WriteFileAtomically(const std::string& path, std::string_view content,
                           const WriteFileOptions& options = {});

}  // namespace migledger
