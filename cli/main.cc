#include "cli/command.h"
#include "common/interrupt.h"

int main(int argc, char** argv) {
  // First, while this is the only thread: every later one inherits the mask.
  migledger::InstallInterruptHandlers();
  const int code = migledger::RunCli(argc, argv);
  // An interrupted plan ends the process by its signal (error printed).
  migledger::EndByInterruptSignal();
  return code;
}
