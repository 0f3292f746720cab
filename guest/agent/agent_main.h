// The whole of vessel-agent's main(), in the library so that the executable (main.cc) is one
// line with no include paths and can be linked fully static.
#ifndef VESSEL_GUEST_AGENT_AGENT_MAIN_H_
#define VESSEL_GUEST_AGENT_AGENT_MAIN_H_

namespace vessel::agent {

int AgentMain(int argc, char** argv);

}  // namespace vessel::agent

#endif  // VESSEL_GUEST_AGENT_AGENT_MAIN_H_
