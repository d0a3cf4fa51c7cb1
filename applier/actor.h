// Who is running the tool, for the envelope of every event.
#pragma once

#include "migledger/v1/event.pb.h"

namespace migledger {

// OS user, host, pid, tool version, and CI job / git commit taken from the
// usual CI environment variables when present.
v1::Actor CurrentActor();

// The tool's version string.
const char* ToolVersion();

}  // namespace migledger
