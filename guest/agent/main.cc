// vessel-agent: see agent_main.cc. No includes on purpose: this file is compiled without the
// library's usage requirements so that the binary can be linked with only static archives.
namespace vessel::agent {
int AgentMain(int argc, char** argv);
}  // namespace vessel::agent

int main(int argc, char** argv) { return vessel::agent::AgentMain(argc, argv); }
