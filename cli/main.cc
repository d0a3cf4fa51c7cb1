#include "cli/command.h"
#include "common/interrupt.h"

int main(int argc, char** argv) {
  // First, while this is the only thread: every later one inherits the mask.
  migledger::InstallInterruptHandlers();
  return migledger::RunCli(argc, argv);
}
