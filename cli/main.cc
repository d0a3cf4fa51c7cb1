#include "cli/command.h"

int main(int argc, char** argv) { return migledger::RunCli(argc, argv); }
