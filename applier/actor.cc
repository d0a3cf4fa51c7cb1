#include "applier/actor.h"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>

namespace migledger {

const char* ToolVersion() { return MIGLEDGER_VERSION; }

namespace {
std::string FirstEnv(std::initializer_list<const char*> names) {
  for (const char* n : names) {
    if (const char* v = std::getenv(n); v && *v) return v;
  }
  return "";
}
}  // namespace

v1::Actor CurrentActor() {
  v1::Actor a;
  std::string user = FirstEnv({"MIGLEDGER_ACTOR"});
  if (user.empty()) {
    if (const passwd* pw = getpwuid(geteuid())) user = pw->pw_name;
  }
  if (user.empty()) user = FirstEnv({"USER", "LOGNAME"});
  a.set_os_user(user);
  char host[256] = {0};
  if (gethostname(host, sizeof host - 1) == 0) a.set_host(host);
  a.set_pid(getpid());
  a.set_tool_version(ToolVersion());
  a.set_ci_job(FirstEnv({"MIGLEDGER_CI_JOB", "GITHUB_RUN_ID", "CI_JOB_ID",
                         "BUILD_ID", "BUILDKITE_JOB_ID", "CIRCLE_WORKFLOW_JOB_ID"}));
  a.set_git_commit(FirstEnv({"MIGLEDGER_GIT_COMMIT", "GIT_COMMIT", "GITHUB_SHA",
                             "CI_COMMIT_SHA", "BUILDKITE_COMMIT", "CIRCLE_SHA1"}));
  return a;
}

}  // namespace migledger
