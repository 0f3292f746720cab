// `vessel template build|ls|rm`: manage the sandbox templates (vessel/sandbox/template.h).
#ifndef VESSEL_SANDBOX_CLI_TEMPLATE_CMD_H_
#define VESSEL_SANDBOX_CLI_TEMPLATE_CMD_H_

namespace vessel::sandbox {

// argv[1] is "template". Returns the process exit status (0, 1 on failure, 2 on bad usage).
int TemplateMain(int argc, char** argv);

}  // namespace vessel::sandbox

#endif  // VESSEL_SANDBOX_CLI_TEMPLATE_CMD_H_
